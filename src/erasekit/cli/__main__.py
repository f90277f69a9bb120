"""python -m erasekit.cli"""

from erasekit.cli import main

main()

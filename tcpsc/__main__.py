"""
C{python -m tcpsc}: the C{tcpsc} command (C{tcpsc._cli.main}).
"""

from ._cli.main import main

if __name__ == "__main__":
    main()

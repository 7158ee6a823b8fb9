"""
The twistd plugin of tcpsc: C{twistd -n tcpsc --port 8081}.

Only a L{ServiceMaker}: twistd imports this module for every plugin scan, so
it stays tiny and imports tcpsc itself (C{tcpsc.tap}) only when the C{tcpsc}
subcommand is used.  This directory must not have an C{__init__.py}.
"""

from twisted.application.service import ServiceMaker

tcpsc = ServiceMaker(
    "tcpsc",
    "tcpsc.tap",
    "Message-oriented TCP/TLS 1.3 server: echo, chat, record, or your own protocol",
    "tcpsc",
)

"""
An application that a daemon with C{--workers} accepts, and that none of
its workers can start: the import fails in a worker (which has
C{TCPSC_WORKER} in its environment while it reads its options), to show the
parent's back-off.
"""

import os

from tcpsc import MessageProtocol

if "TCPSC_WORKER" in os.environ:
    raise ImportError("this application fails in every worker, on purpose")


class Failing(MessageProtocol):
    pass

"""
Your own protocol, served by the tcpsc daemon: every message comes back in
upper case.

From the root of the tcpsc checkout:

    twistd -n --pidfile= tcpsc --port 8081 --app examples.upper:Upper

and in another terminal:

    tcpsc connect localhost 8081

Everything the daemon offers applies to it: C{--tls}, C{--max-connections},
C{--idle-timeout}, ...; C{--delimiter} and C{--max-length} override the
class attributes below.
"""

from tcpsc import MessageProtocol


class Upper(MessageProtocol):
    """
    Replies to each message with the message in upper case.
    """

    delimiter = b"\n"
    maxMessageLength = 64 * 1024

    def messageReceived(self, message: bytes) -> None:
        # sendMessage refuses (returns False) what the peer could not
        # receive: a message containing the delimiter, or one too long.
        self.sendMessage(message.upper())

"""
An echo server as a twistd application, on tcp:8081:

    twistd -ny examples/echo.tac            # -n: in the foreground; -y: this file

Each message (a line) that a client sends comes back to it.  SIGTERM or
Ctrl-C stops it: the port is closed, every connection gets what was sent to
it, then is closed, and twistd exits.  Add more services (another
ServerService, a KeepConnectedService) to the same application to run them
in the same process.
"""

from twisted.application.service import Application

from tcpsc import MessageProtocol, Server, ServerService


class Echo(MessageProtocol):
    """
    Sends every message back to its sender.
    """

    def messageReceived(self, message: bytes) -> None:
        self.sendMessage(message)


application = Application("tcpsc-echo")
ServerService(Server(Echo), ["tcp:8081"]).setServiceParent(application)

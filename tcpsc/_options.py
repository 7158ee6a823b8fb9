# -*- test-case-name: tests.test_tap.ParseDelimiterTests,tests.test_tap.OptionsTests,tests.test_cli -*-
r"""
The grammar of values typed on a command line, shared by the daemon's
options (L{tcpsc.tap.Options}) and the C{tcpsc} command's, so that both
read a delimiter, a number of seconds, a count or a port the same way.

Each parser returns the value or raises C{ValueError} whose message says
what is wrong with the text (without the option's name or the text itself,
which each command line places as it words its errors);
L{OutOfRange} for a number outside what the option takes.

A delimiter is literal text, encoded as UTF-8, with these backslash
escapes: C{\n} (newline), C{\r} (carriage return), C{\t} (tab), C{\0} (the
zero byte), C{\\} (a backslash) and C{\xHH} (the byte of two hex digits).
Any other backslash is an error, and so is an empty delimiter.  Digits are
text like any other: C{10} is the two bytes C{b"10"}, a newline is C{\n}
(or C{\x0a}).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Collection

__all__ = [
    "DELIMITER_HELP",
    "OutOfRange",
    "formatDelimiter",
    "parseCount",
    "parseDelimiter",
    "parseHostPort",
    "parsePortNumber",
    "parseSeconds",
]

#: The help text of every C{--delimiter} option, without its default.
DELIMITER_HELP = (
    "message delimiter: text with the escapes \\n \\r \\t \\0 \\\\ \\xHH, "
    "such as '\\r\\n', '\\0', '\\x1e' or '|' (digits are text: 10 is the two bytes 1 and 0)"
)


class OutOfRange(ValueError):
    """
    A number outside the range an option takes (as opposed to text that is
    not a number at all, a plain C{ValueError}).
    """


def parseSeconds(
    text: str, *, allowZero: bool = False, noneWords: Collection[str] = ()
) -> float | None:
    """
    A finite number of seconds, more than 0 (or 0 or more with
    C{allowZero}); C{None} for one of C{noneWords} (compared without
    case), for an option that can be turned off.

    @raise ValueError: not a number of seconds.
    @raise OutOfRange: below the range, or infinite.
    """
    if text.lower() in noneWords:
        return None
    try:
        seconds = float(text)
    except ValueError:
        raise ValueError("not a number of seconds") from None
    if allowZero:
        if not 0 <= seconds < float("inf"):
            raise OutOfRange("must be 0 or more seconds")
    elif not 0 < seconds < float("inf"):
        raise OutOfRange("must be more than 0 seconds")
    return seconds


def parseCount(text: str, *, minimum: int = 1, noneWords: Collection[str] = ()) -> int | None:
    """
    A whole number of C{minimum} or more (connections, bytes, processes);
    C{None} for one of C{noneWords} (compared without case), for a limit
    that can be turned off.

    @raise ValueError: not a whole number.
    @raise OutOfRange: less than C{minimum}.
    """
    if text.lower() in noneWords:
        return None
    try:
        value = int(text)
    except ValueError:
        raise ValueError("not a whole number") from None
    if value < minimum:
        raise OutOfRange(f"must be at least {minimum}")
    return value


def parsePortNumber(text: str, *, minimum: int = 1) -> int:
    """
    A TCP port number from C{minimum} (0 for a server that lets the system
    choose, 1 for a port to connect to) to 65535.

    @raise ValueError: not a number.
    @raise OutOfRange: outside the range.
    """
    try:
        port = int(text)
    except ValueError:
        raise ValueError("not a port number") from None
    if not minimum <= port <= 65535:
        raise OutOfRange(f"outside {minimum}-65535")
    return port


_ESCAPES = {"n": b"\n", "r": b"\r", "t": b"\t", "0": b"\0", "\\": b"\\"}
_NAMES = {value[0]: f"\\{name}" for name, value in _ESCAPES.items()}


def parseDelimiter(text: str) -> bytes:
    r"""
    Turn a delimiter as typed on a command line into bytes, by the grammar
    of this module: C{"\r\n"}, C{"|"} and C{"\x1e"} all work.

    @raise ValueError: empty, or an unknown or incomplete escape; the
        message quotes the delimiter as it was typed.
    """
    out = bytearray()
    i = 0
    while i < len(text):
        char = text[i]
        if char != "\\":
            out += char.encode("utf-8")
            i += 1
            continue
        if i + 1 >= len(text):
            raise ValueError(f"{text} ends with a lone backslash (a backslash itself is \\\\)")
        escape = text[i + 1]
        if escape in _ESCAPES:
            out += _ESCAPES[escape]
            i += 2
        elif escape == "x":
            digits = text[i + 2 : i + 4]
            if len(digits) != 2 or not all(c in "0123456789abcdefABCDEF" for c in digits):
                raise ValueError(f"\\x needs two hex digits, as in \\x1e, in {text}")
            out.append(int(digits, 16))
            i += 4
        else:
            raise ValueError(
                f"unknown escape \\{escape} in {text} (known: \\n \\r \\t \\0 \\\\ \\xHH)"
            )
    if not out:
        raise ValueError("the delimiter must be one or more bytes")
    return bytes(out)


def formatDelimiter(delimiter: bytes) -> str:
    r"""
    Write C{delimiter} in the grammar L{parseDelimiter} reads, as a user
    would type it: C{b"\r\n"} is C{\r\n}, C{b"|"} is C{|}.
    """
    try:
        text = delimiter.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    out = []
    if text is not None:
        for char in text:
            code = ord(char)
            if code < 128 and code in _NAMES:
                out.append(_NAMES[code])
            elif code < 32 or code == 127:
                out.append(f"\\x{code:02x}")
            else:
                out.append(char)
    else:
        for byte in delimiter:
            if byte in _NAMES:
                out.append(_NAMES[byte])
            elif 32 <= byte < 127:
                out.append(chr(byte))
            else:
                out.append(f"\\x{byte:02x}")
    return "".join(out)


def parseHostPort(text: str, *, minimum: int = 1, bare: bool = False) -> tuple[str, int]:
    """
    An IP address and a port: C{127.0.0.1:9000}, or C{[::1]:9000} for
    IPv6 (the brackets keep the address's colons apart from the port's);
    with C{bare}, a port alone too (C{9000}), whose address is C{""}.

    Only addresses are read, never host names, so that what is bound or
    joined is what was typed.

    @param minimum: the smallest port taken (0 for a server that lets the
        system choose).
    @return: the address (without brackets) and the port.
    @raise ValueError: not in that form, or not an IP address.
    @raise OutOfRange: a port outside C{minimum}-65535.
    """
    text = text.strip()
    if bare and text.isdigit():
        return "", parsePortNumber(text, minimum=minimum)
    host, colon, port = text.rpartition(":")
    expected = "ADDRESS:PORT, such as 127.0.0.1:9000 or [::1]:9000" + (
        ", or a port alone" if bare else ""
    )
    if not colon or not host:
        raise ValueError(f"not {expected}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"{host!r} in brackets is not an IPv6 address") from None
    elif ":" in host:
        raise ValueError("an IPv6 address goes in brackets, as in [::1]:9000")
    else:
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            raise ValueError(f"{host!r} is not an IP address (names are not read here)") from None
    return host, parsePortNumber(port, minimum=minimum)

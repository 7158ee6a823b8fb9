"""
The public API reads well in C{help()} and in editors: the signatures of
everything in C{tcpsc.__all__} and C{tcpsc.blocking.__all__}, and of their
public methods, show readable defaults (no C{<object object at 0x...>}) and
only public types (no private C{_Name} of tcpsc's).
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Iterator
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

import tcpsc
import tcpsc.blocking

_PRIVATE = re.compile(r"(?<![\w.])_[A-Za-z]\w*")


def publicCallables() -> Iterator[tuple[str, Any]]:
    """
    Every public callable: the names of the two modules' C{__all__}, and the
    public methods (and C{__init__}) of the classes among them.
    """
    for module in (tcpsc, tcpsc.blocking):
        for name in module.__all__:
            value = getattr(module, name)
            if not callable(value):
                continue
            yield f"{module.__name__}.{name}", value
            if isinstance(value, type):
                for attribute, member in vars(value).items():
                    if attribute.startswith("_") and attribute != "__init__":
                        continue
                    if isinstance(member, (staticmethod, classmethod)):
                        member = member.__func__
                    if callable(member):
                        yield f"{module.__name__}.{name}.{attribute}", member


class SignatureTests(SynchronousTestCase):
    def test_readableDefaultsAndPublicTypes(self) -> None:
        checked = 0
        problems = []
        for name, value in publicCallables():
            try:
                signature = str(inspect.signature(value))
            except (TypeError, ValueError):
                continue
            checked += 1
            if "object at 0x" in signature:
                problems.append(f"{name}{signature}: a default without a readable repr")
            private = _PRIVATE.findall(signature)
            if private:
                problems.append(f"{name}{signature}: private names {private}")
        self.assertGreater(checked, 50)
        self.assertEqual(problems, [], "\n".join(problems))

    def test_connectReturnsPublicProtocol(self) -> None:
        """
        C{Client.connect} promises the public protocol classes.
        """
        annotation = inspect.signature(tcpsc.Client.connect).return_annotation
        self.assertEqual(annotation, "Deferred[MessageProtocol | StreamProtocol]")

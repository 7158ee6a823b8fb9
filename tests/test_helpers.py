"""
Tests of the test helpers themselves (L{tests._helpers}): what a timed-out
wait says, and that a coroutine test cannot pass without running.
"""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tests._helpers import asyncTest, describeCondition, waitFor


class _Falsy(str):
    """
    A long string that is false.
    """

    def __bool__(self) -> bool:
        return False


class WaitForTests(SynchronousTestCase):
    """
    L{waitFor} polls on a clock until its condition holds, and a timeout
    says in words what it waited for.
    """

    def timeOut(self, condition: object, **kwargs: object) -> str:
        """
        Wait for C{condition} on a L{Clock} with a 3-second bound, move the
        clock past the bound, and return the message of the failure.
        """
        clock = Clock()
        d = waitFor(condition, 3.0, 1.0, clock, **kwargs)  # type: ignore[arg-type]
        clock.pump([1.0] * 5)
        return str(self.failureResultOf(d, AssertionError).value)

    def test_whatAndCondition(self) -> None:
        """
        With C{what}, the message names it, the bound, and the condition's
        source text with the file and line where it was written.
        """
        ids: list[int] = [1]
        message = self.timeOut(lambda: len(ids) == 2, what="two connections registered")
        self.assertRegex(
            message,
            r"^waited 3 s in vain for two connections registered; "
            r"condition: len\(ids\) == 2 \(tests/test_helpers\.py:\d+\)$",
        )

    def test_lambdaSource(self) -> None:
        """
        Without C{what}, the lambda's expression stands for it: never the
        C{repr} of a function object.
        """
        ids: list[int] = []
        message = self.timeOut(lambda: len(ids) == 2)
        self.assertRegex(
            message, r"^waited 3 s in vain for len\(ids\) == 2 \(tests/test_helpers\.py:\d+\)$"
        )
        self.assertNotIn("<function", message)

    def test_lastValue(self) -> None:
        """
        A condition that returns something other than a bool shows what it
        returned last; a bool is not shown.
        """
        closed: list[int] = []
        self.assertTrue(self.timeOut(lambda: closed).endswith("; it was []"))
        self.assertNotIn("it was", self.timeOut(lambda: len(closed) == 1))

    def test_longValueCut(self) -> None:
        """
        A long last value is cut to its first 200 characters.
        """
        value = _Falsy("y" * 1000)
        message = self.timeOut(lambda: value, what="a long value")
        self.assertTrue(message.endswith("; it was " + repr(value)[:200] + "..."), message)

    def test_namedFunction(self) -> None:
        """
        A named function is described by its name and the first line of its
        docstring.
        """

        def everyoneServed() -> bool:
            """
            Every client got its reply.
            """
            return False

        self.assertRegex(
            self.timeOut(everyoneServed),
            r"^waited 3 s in vain for WaitForTests\.test_namedFunction\.<locals>\."
            r"everyoneServed\(\): Every client got its reply\. \(tests/test_helpers\.py:\d+\)$",
        )

    def test_twoLambdasOnOneLine(self) -> None:
        """
        Of two lambdas written on one line, each is described by its own
        expression.
        """
        first, second = (lambda: len("ab") == 3, lambda: "x" in "yz")
        self.assertTrue(describeCondition(first).startswith('len("ab") == 3 ('))
        self.assertTrue(describeCondition(second).startswith('"x" in "yz" ('))

    def test_multiLineLambda(self) -> None:
        """
        A lambda written over several lines is described on one.
        """
        received = [b"a"]
        description = describeCondition(lambda: len(received) >= 2)
        self.assertTrue(description.startswith("len(received) >= 2 ("), description)

    def test_notALambdaOrFunction(self) -> None:
        """
        A callable without source code is described by its C{repr}.
        """
        self.assertEqual(describeCondition(bool), repr(bool))

    def test_metInTime(self) -> None:
        """
        A condition that becomes true before the bound ends the wait with
        C{None}.
        """
        clock = Clock()
        calls: list[int] = []

        def third() -> bool:
            calls.append(1)
            return len(calls) >= 3

        d = waitFor(third, 3.0, 1.0, clock)
        self.assertNoResult(d)
        clock.pump([1.0, 1.0])
        self.assertIsNone(self.successResultOf(d))
        self.assertEqual(len(calls), 3)


class AsyncTestTests(SynchronousTestCase):
    """
    L{asyncTest} runs a coroutine test method, and refuses a test case that
    would not wait on it.
    """

    def test_runsTheCoroutine(self) -> None:
        """
        In a L{TestCase}, the wrapped method returns a L{Deferred} of the
        coroutine, which runs.
        """
        ran: list[bool] = []

        class Example(TestCase):
            @asyncTest
            async def test_it(self) -> None:
                ran.append(True)

        self.successResultOf(Example("test_it").test_it())
        self.assertEqual(ran, [True])

    def test_synchronousTestCaseRefused(self) -> None:
        """
        A L{SynchronousTestCase} would drop the coroutine's L{Deferred} and
        pass without running it: the wrapper raises instead.
        """
        ran: list[bool] = []

        class Example(SynchronousTestCase):
            @asyncTest
            async def test_it(self) -> None:
                ran.append(True)

        error = self.assertRaises(TypeError, Example("test_it").test_it)
        self.assertIn("SynchronousTestCase", str(error))
        self.assertEqual(ran, [])

"""The compiled build (compile_native.py, distributed_asgi/native.py): what is compiled is what
runs, and an extension older than its source is reported instead of silently running old code."""

from __future__ import annotations

import asyncio
import importlib
import os
import sysconfig
import time
from pathlib import Path

import pytest

import compile_native
from distributed_asgi import native

SUFFIX = sysconfig.get_config_var("EXT_SUFFIX")


def test_every_listed_module_exists_and_none_left_out_is_listed() -> None:
    listed = compile_native.compiled_sources()
    assert listed, "the request path is compiled"
    for source in listed:
        assert (compile_native.ROOT / source).is_file(), source
        assert source not in compile_native.LEFT_OUT
        assert not source.endswith("__init__.py")
    assert "distributed_asgi/core/frames.py" in listed  # the protocol of every request


@pytest.mark.skipif(not native.compiled(), reason="the plain sources run (no C compiler)")
def test_the_compiled_modules_are_the_ones_imported() -> None:
    for source in compile_native.compiled_sources():
        name = source[: -len(".py")].replace("/", ".")
        module = importlib.import_module(name)
        assert str(module.__file__).endswith(SUFFIX), name
    assert native.stale_modules() == []  # make test compiles before it runs the tests


def test_an_extension_older_than_its_source_is_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = tmp_path / "distributed_asgi"
    (package / "core").mkdir(parents=True)
    for name in ("core/fresh", "core/stale"):
        (package / f"{name}.py").write_text("")
        (package / f"{name}{SUFFIX}").write_bytes(b"")
    os.utime(package / f"core/stale{SUFFIX}", (1_000_000, 1_000_000))  # built long ago
    monkeypatch.setattr(native, "_PACKAGE", package)
    assert native.stale_modules() == ["distributed_asgi.core.stale"]
    with pytest.warns(RuntimeWarning, match=r"distributed_asgi\.core\.stale is older"):
        native.warn_if_stale()


@pytest.mark.parametrize(
    ("body", "suspends"),
    [
        ("try:\n        pass\n    except Exception:\n        await x()", True),
        ("try:\n        pass\n    finally:\n        await x()", True),
        ("async with x():\n        pass", True),
        ("try:\n        await x()\n    except Exception:\n        pass", False),
        ("try:\n        pass\n    finally:\n        x()\n    await x()", False),
    ],
)
def test_a_module_that_awaits_while_handling_an_exception_is_not_compiled(
    tmp_path: Path, body: str, suspends: bool
) -> None:
    # mypyc 2.4 keeps the exception being handled in the thread, not the coroutine: another
    # task resumed meanwhile sees it as its own (a bare raise there re-raises it).
    module = tmp_path / "module.py"
    module.write_text(f"async def f() -> None:\n    {body}\n")
    assert compile_native._awaits_while_handling(module) is suspends


def test_no_compiled_module_trusts_a_narrowing_across_a_wait() -> None:
    found = {
        source: lines
        for source in compile_native.compiled_sources()
        if (lines := compile_native.narrowed_across_waits(compile_native.ROOT / source))
    }
    assert found == {}, "ask again through a call after the wait (compile_native.py)"


@pytest.mark.parametrize(
    ("body", "lines"),
    [
        # The loop's condition narrows: its body reads it after a wait.
        (
            "while self.x is None:\n        await f()\n"
            "        if self.x is None:\n            pass",
            [5],
        ),
        # Looked at again after the wait, as a second connection does.
        (
            "if self.x is None:\n        y = await f()\n"
            "        if self.x is None:\n            pass",
            [5],
        ),
        # After an if that leaves, what follows has the negation.
        ("if self.x is None:\n        return\n    await f()\n    self.x.go()", [6]),
        ("if not isinstance(self.x, int):\n        return\n    await f()\n    g(self.x)", [6]),
        # Read before the wait (the awaited expression itself), or asked again by a call.
        ("if self.x is not None:\n        await self.x", []),
        (
            "while self.x is None:\n        await f()\n"
            "        if self.stopped():\n            pass",
            [],
        ),
        # Set after the wait: the narrowing is then the value's.
        ("if self.x is None:\n        await f()\n        self.x = 1\n        g(self.x)", []),
        # The negation of an and narrows nothing; an or's block is not narrowed.
        ("if self.x is None and y:\n        return\n    await f()\n    g(self.x)", []),
        ("if self.x is None or y:\n        await f()\n        g(self.x)", []),
    ],
)
def test_a_read_of_an_attribute_narrowed_before_a_wait_is_found(
    tmp_path: Path, body: str, lines: list[int]
) -> None:
    # mypyc checks every read against the type mypy narrowed it to; another task may have
    # changed the attribute during the wait (a compiled Liveness.channel() raised TypeError
    # for the second of two connections that came together).
    module = tmp_path / "module.py"
    module.write_text(f"class C:\n  async def m(self) -> None:\n    {body}\n")
    assert compile_native.narrowed_across_waits(module) == lines


async def test_an_error_of_compiled_code_carries_no_other_tasks_exception() -> None:
    from distributed_asgi.core.frames import FrameError, decode_frame

    handling = asyncio.Event()

    async def handles_an_error_slowly() -> None:
        try:
            raise KeyError("another task's")
        except KeyError:
            handling.set()
            await asyncio.sleep(0.05)

    other = asyncio.ensure_future(handles_an_error_slowly())
    await handling.wait()
    with pytest.raises(FrameError) as raised:
        decode_frame({"v": 1, "t": "nonsense", "id": "c1"})
    await other
    assert raised.value.__context__ is None


def test_a_build_is_up_to_date_only_with_every_listed_module_built_and_no_other(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = tmp_path / "distributed_asgi"
    package.mkdir()
    monkeypatch.setattr(compile_native, "ROOT", tmp_path)
    (package / "__init__.py").write_text("")
    (package / "fast.py").write_text("def f() -> int:\n    return 1\n")
    assert compile_native.compiled_sources() == ["distributed_asgi/fast.py"]
    later = max(time.time(), Path(compile_native.__file__).stat().st_mtime) + 60
    built = [package / f"fast{SUFFIX}", package / f"_native__mypyc{SUFFIX}"]
    for extension in built:
        extension.write_bytes(b"")
        os.utime(extension, (later, later))
    assert compile_native.up_to_date()
    os.utime(package / "fast.py", (later + 1, later + 1))  # edited since
    assert not compile_native.up_to_date()
    os.utime(package / "fast.py", (later - 1, later - 1))
    (package / f"slow{SUFFIX}").write_bytes(b"")  # a module no longer listed
    os.utime(package / f"slow{SUFFIX}", (later, later))
    assert not compile_native.up_to_date()
    compile_native.clean()
    assert not list(package.glob("*" + SUFFIX))

"""Issue 17: a configuration file is bounded: its size, its aliases, its kind of file."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from coevol.config import MAX_CONFIG_BYTES, load_config
from coevol.errors import ConfigError

LAUGHS = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 10)}]\n" for i in range(8)
)


def test_a_huge_config_is_refused_before_it_is_parsed(tmp_path: Path) -> None:
    big = tmp_path / "big.yaml"
    line = b"# padding padding padding padding padding padding padding padding padding\n"
    big.write_bytes(b"model: m\n" + line * (MAX_CONFIG_BYTES // len(line) + 1))
    with pytest.raises(ConfigError, match=r"big.yaml: a configuration file larger than 1 MiB is refused"):
        load_config(big)


def test_an_alias_bomb_is_refused(tmp_path: Path) -> None:
    bomb = tmp_path / "laughs.yaml"
    bomb.write_text(LAUGHS + "model: m\n")  # 10**9 values once expanded, 1 KB on disk
    with pytest.raises(ConfigError, match="aliases expand past 100,000 values"):
        load_config(bomb)
    shared = tmp_path / "shared.yaml"  # aliases themselves are fine
    shared.write_text("x-defaults: &d {temperature: 0.2}\nroles:\n  judge: *d\n  editor: *d\n")
    with pytest.raises(ConfigError, match="unknown key 'x-defaults'"):  # validated as usual
        load_config(shared)


def test_a_fifo_or_a_device_as_config_is_refused_at_once(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo.yaml"
    os.mkfifo(fifo)
    zero = tmp_path / "zero.yaml"
    zero.symlink_to("/dev/zero")
    for path in (fifo, zero, tmp_path):
        with pytest.raises(ConfigError, match="a configuration must be a regular file"):
            load_config(path)

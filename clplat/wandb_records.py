"""What a W&B run's local record files hold: read back for resuming and for tests.

W&B writes every run, online or offline, to ``<run_dir>/wandb/<attempt>/run-<id>.wandb``: LevelDB
log framing (32 KiB blocks of checksummed chunks) around protobuf ``Record`` messages, the file
``wandb sync`` uploads. wandb 0.31 keeps its reader in its Go core, so this module decodes the
framing itself. A process killed with SIGKILL leaves the file with only what wandb-core flushed
(often nothing past the 7-byte header): reading it tells a resumed run which history rows the
earlier attempts actually recorded, so the missing ones can be logged again
(:func:`clplat.logging.backfill_wandb_history`).
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any, Iterator

_HEADER = 7  # ":W&B", magic (2 bytes), version (1 byte)
_BLOCK = 32768
_CHUNK_HEADER = 7  # crc32 (4 bytes), length (2 bytes), type (1 byte)
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


def read_records(path: Path) -> Iterator[Any]:
    """Every complete ``wandb_internal_pb2.Record`` in ``path``; a torn tail (a killed writer) ends
    the iteration instead of raising."""
    from google.protobuf.message import DecodeError
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    if data[:4] != b":W&B":
        return
    pos, pending = _HEADER, b""
    while pos + _CHUNK_HEADER <= len(data):
        left = _BLOCK - pos % _BLOCK
        if left < _CHUNK_HEADER:  # block trailer padding
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + _CHUNK_HEADER])
        if kind == 0 and length == 0:  # zero padding up to the end of the block
            pos += left
            continue
        chunk = data[pos + _CHUNK_HEADER:pos + _CHUNK_HEADER + length]
        if len(chunk) < length:
            return
        pos += _CHUNK_HEADER + length
        if kind == _FIRST:
            pending = chunk
            continue
        if kind == _MIDDLE:
            pending += chunk
            continue
        payload, pending = (chunk if kind == _FULL else pending + chunk), b""
        record = wandb_internal_pb2.Record()
        try:
            record.ParseFromString(payload)
        except DecodeError:
            return
        yield record


def history_rows(records: Iterator[Any]) -> list[dict[str, Any]]:
    """The history rows (``run.log`` calls) of ``records``, keys joined with ``/``."""
    rows = []
    for record in records:
        if record.WhichOneof("record_type") == "history":
            rows.append({"/".join(item.nested_key) or item.key: json.loads(item.value_json)
                         for item in record.history.item})
    return rows


def run_files(run_dir: Path, run_id: str) -> list[Path]:
    """The record files of every attempt of W&B run ``run_id`` under ``run_dir/wandb``."""
    return sorted((run_dir / "wandb").glob(f"*run-*-{run_id}*/run-{run_id}.wandb"))


def recorded_count(run_dir: Path, run_id: str, key: str) -> dict[int, int]:
    """How many history rows holding ``key`` any attempt of ``run_id`` recorded, per ``cl/global_iter``."""
    counts: dict[int, int] = {}
    for path in run_files(run_dir, run_id):
        for row in history_rows(read_records(path)):
            if key in row and "cl/global_iter" in row:
                step = int(row["cl/global_iter"])
                counts[step] = counts.get(step, 0) + 1
    return counts

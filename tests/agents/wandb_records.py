"""Reading an offline W&B run back: its records, its history rows, its retention media."""

from __future__ import annotations

import glob
import json
import struct
from pathlib import Path
from typing import Any


def read_wandb_records(run_dir: Path) -> list[Any]:
    """The records of the offline run's ``.wandb`` file, parsed with W&B's own protobufs.

    The file is W&B's 7-byte header (``:W&B``, magic, version) then a LevelDB-style log of
    32 KiB blocks of chunks (crc32, length, type: full / first / middle / last).

    ``run.finish()`` only tells W&B's service process that the run is over
    (``inform_finish`` is published, not awaited): the service writes the file's last
    blocks afterwards. Once under load the history was not in the file yet when it was read,
    so the service is torn down first, which waits for it to flush and exit."""
    import wandb
    from wandb.proto import wandb_internal_pb2

    wandb.teardown()
    (path,) = glob.glob(str(run_dir / "wandb" / "offline-run-*" / "*.wandb"))
    data = Path(path).read_bytes()
    assert data[:4] == b":W&B"
    block, pos, payloads, pending = 32768, 7, [], b""
    while pos + 7 <= len(data):
        left = block - pos % block
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if left < 7 or (kind == 0 and length == 0):
            pos += left  # block trailer / padding
            continue
        chunk, pos = data[pos + 7 : pos + 7 + length], pos + 7 + length
        if kind == 1:
            payloads.append(chunk)
        elif kind in (2, 3):
            pending += chunk
        elif kind == 4:
            payloads.append(pending + chunk)
            pending = b""
    records = []
    for payload in payloads:
        record = wandb_internal_pb2.Record()
        record.ParseFromString(payload)
        records.append(record)
    return records


def wandb_history(run_dir: Path) -> list[dict[str, Any]]:
    """History rows of the offline run: ``{key: decoded value}`` (nested keys joined by /)."""
    rows = []
    for record in read_wandb_records(run_dir):
        if record.WhichOneof("record_type") == "history":
            rows.append(
                {
                    item.key or "/".join(item.nested_key): json.loads(item.value_json)
                    for item in record.history.item
                }
            )
    return rows


def check_media_in_offline_run(run_dir: Path, step: int | None = None) -> None:
    rows = wandb_history(run_dir)
    media = [r for r in rows if r.get("retention/keep/_type") == "image-file"]
    assert media, f"no retention images in the W&B history: {rows}"
    row = media[0] if step is None else next(r for r in media if r["_step"] == step)
    assert row["retention/spans/_type"] == "image-file"
    assert row["retention/span_layer0/_type"] == "histogram"
    assert sum(row["retention/span_layer0/values"]) > 0
    (offline,) = glob.glob(str(run_dir / "wandb" / "offline-run-*"))
    for key in ("retention/keep", "retention/spans"):
        assert (Path(offline) / "files" / row[f"{key}/path"]).is_file()

"""The CelebA index: the text files of a CelebA-layout root joined into one Arrow table.

`read_index(data_uri)` reads the required files (attributes, landmarks, partition),
the optional ones (identity, light labels), and joins them on the image id. An id
that any file rejects, or that is missing from a required file, becomes one row of
`Index.rejected` (stage "read") with every reason found for it; the others become
rows of `Index.table`. Unique ids in = table rows + rejected rows.
"""
from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from headrot import storage
from headrot.data import celeba_text as ct
from headrot.rejects import REJECTED_SCHEMA

IMAGES_DIR = "img_align_celeba"
READ_STAGE = "read"
# Read failures of the image files themselves are reported by the decode stage.
DECODE_STAGE = "decode"


def index_schema(attribute_names: tuple[str, ...]) -> pa.Schema:
    """The table's schema for a given attribute header."""
    return pa.schema(
        [
            ("image_id", pa.string()),
            ("path", pa.string()),
            ("partition", pa.int8()),
            ("identity", pa.int32()),
            *[(name, pa.bool_()) for name in attribute_names],
            ("landmarks", pa.list_(pa.float32(), len(ct.LANDMARK_NAMES))),
            ("light_label", pa.string()),
        ],
        metadata={"landmark_names": " ".join(ct.LANDMARK_NAMES)},
    )


# ---------------------------------------------------------------------------
# Result


@dataclass
class Index:
    table: pa.Table                    # one row per usable image (schema: index_schema)
    rejected: pa.Table                 # image_id, stage, reason (REJECTED_SCHEMA)
    data_uri: str
    attribute_names: tuple[str, ...]
    n_ids: int                         # distinct ids seen in any file
    warnings: list[str] = field(default_factory=list)
    files: dict[str, str] = field(default_factory=dict)  # role -> URI actually read

    @property
    def n_rows(self) -> int:
        return self.table.num_rows

    @property
    def n_rejected(self) -> int:
        return self.rejected.num_rows

    def per_partition(self) -> dict[str, int]:
        names = {0: "train", 1: "val", 2: "test"}
        counts = Counter(self.table.column("partition").to_pylist())
        return {names[p]: counts.get(p, 0) for p in (0, 1, 2)}

    def summary(self) -> dict[str, Any]:
        from headrot.rejects import count_by_reason

        return {
            "data": self.data_uri,
            "ids": self.n_ids,
            "rows": self.n_rows,
            "rejected": self.n_rejected,
            "per_partition": self.per_partition(),
            "with_identity": int(np.count_nonzero(self.table.column("identity").to_numpy() >= 0)),
            "with_light_label": self.n_rows - self.table.column("light_label").null_count,
            "rejected_by_reason": count_by_reason(self.rejected),
            "warnings": list(self.warnings),
            "files": dict(self.files),
        }


# ---------------------------------------------------------------------------
# Reading


def _root(data_uri: str) -> str:
    if not storage.is_remote(data_uri):
        return os.path.abspath(data_uri)  # full paths: Ray workers may run elsewhere in the tree
    return data_uri.rstrip("/")


def _read_text(uri: str, file: str, required: bool, hint: str = "") -> str | None:
    try:
        data = storage.read_bytes(uri)
    except FileNotFoundError:
        if not required:
            return None
        raise ValueError(f"{file}: not found at {uri}; a CelebA-layout root needs "
                         f"{ct.ATTRIBUTES_FILE}, {ct.LANDMARKS_FILE} and {ct.PARTITION_FILE}"
                         f"{hint}") from None
    except IsADirectoryError:
        raise ValueError(f"{file}: {uri} is a folder, expected a text file") from None
    # A stray bad byte must not stop the job: it ends as a rejected line (or a
    # header error) through the replacement character.
    return data.decode("utf-8", errors="replace")


def read_index(data_uri: str, light_labels: str | None = None) -> Index:
    """Read and join the CelebA text files under `data_uri` (a folder or s3://bucket/prefix).

    `light_labels`: a CSV `image_id,light` (left|center|right); by default
    `<data_uri>/light_labels.csv` when it exists. Raises ValueError for a missing
    required file or a malformed header, before any work starts.
    """
    root = _root(data_uri)
    hint = " (`headrot synth --out DIR` writes a synthetic one)"
    files = {
        "attributes": storage.join(root, ct.ATTRIBUTES_FILE),
        "landmarks": storage.join(root, ct.LANDMARKS_FILE),
        "partition": storage.join(root, ct.PARTITION_FILE),
    }
    attrs = ct.parse_attributes(_read_text(files["attributes"], ct.ATTRIBUTES_FILE, True, hint))
    marks = ct.parse_landmarks(_read_text(files["landmarks"], ct.LANDMARKS_FILE, True, hint))
    parts = ct.parse_partition(_read_text(files["partition"], ct.PARTITION_FILE, True, hint))
    required = [attrs, marks, parts]

    optional = []
    identity_uri = storage.join(root, ct.IDENTITY_FILE)
    identity_text = _read_text(identity_uri, ct.IDENTITY_FILE, False)
    ident = None
    if identity_text is not None:
        ident = ct.parse_identity(identity_text)
        files["identity"] = identity_uri
        optional.append(ident)
    light = None
    light_uri = light_labels or storage.join(root, ct.LIGHT_FILE)
    light_text = _read_text(light_uri, os.path.basename(light_uri.rstrip("/")), light_labels is not None)
    if light_text is not None:
        light = ct.parse_light_labels(light_text, file=os.path.basename(light_uri.rstrip("/")))
        files["light_labels"] = light_uri
        optional.append(light)

    # Every id seen anywhere, in first-seen order (the attribute file's order first).
    order: dict[str, None] = {}
    reasons: dict[str, list[str]] = {}
    for parsed in required + optional:
        for image_id in parsed.rows:
            order.setdefault(image_id, None)
        for image_id, reason in parsed.rejects:
            order.setdefault(image_id, None)
            reasons.setdefault(image_id, []).append(reason)

    warnings: list[str] = []
    for parsed in required + optional:
        warnings.extend(parsed.warnings)
    # Ids that only the optional files know: nothing to join them to.
    for parsed in optional:
        extra = [i for i in parsed.rows if i not in attrs.rows and i not in reasons]
        if extra:
            warnings.append(f"{parsed.file}: {len(extra)} id(s) not in {ct.ATTRIBUTES_FILE} "
                            f"(ignored), e.g. {extra[0]}")
    good: list[str] = []
    for image_id in order:
        if image_id not in reasons:
            missing = [p.file for p in required if image_id not in p.rows]
            if missing:
                # Only ids that some file lists get here, so at least one required file has it
                # or an optional one does; optional-only ids are warned about above.
                if not any(image_id in p.rows for p in required):
                    continue
                reasons[image_id] = [f"missing from {', '.join(missing)}"]
                continue
            good.append(image_id)

    table = _build_table(root, good, attrs, marks, parts, ident, light)
    rejected_ids = [i for i in order if i in reasons]
    rejected = pa.table(
        {
            "image_id": pa.array(rejected_ids, pa.string()),
            "stage": pa.array([READ_STAGE] * len(rejected_ids), pa.string()),
            "reason": pa.array(["; ".join(reasons[i]) for i in rejected_ids], pa.string()),
        },
        schema=REJECTED_SCHEMA,
    )
    n_ids = sum(1 for i in order if i in reasons or i in attrs.rows or i in marks.rows or i in parts.rows)
    return Index(table=table, rejected=rejected, data_uri=root, attribute_names=attrs.header,
                 n_ids=n_ids, warnings=warnings, files=files)


def _build_table(root, ids, attrs, marks, parts, ident, light) -> pa.Table:
    schema = index_schema(attrs.header)
    n = len(ids)
    columns: dict[str, pa.Array] = {
        "image_id": pa.array(ids, pa.string()),
        "path": pa.array([storage.join(root, IMAGES_DIR, i) for i in ids], pa.string()),
        "partition": pa.array(np.array([parts.rows[i][0] for i in ids], dtype=np.int8), pa.int8()),
        "identity": pa.array(
            np.array([ident.rows[i][0] if ident is not None and i in ident.rows else -1 for i in ids],
                     dtype=np.int32), pa.int32()),
    }
    flags = np.array([attrs.rows[i] for i in ids], dtype=bool).reshape(n, len(attrs.header))
    for k, name in enumerate(attrs.header):
        columns[name] = pa.array(flags[:, k], pa.bool_())
    coords = np.array([marks.rows[i] for i in ids], dtype=np.float32).reshape(n, len(ct.LANDMARK_NAMES))
    columns["landmarks"] = pa.FixedSizeListArray.from_arrays(
        pa.array(coords.reshape(-1), pa.float32()), len(ct.LANDMARK_NAMES))
    columns["light_label"] = pa.array(
        [light.rows[i][0] if light is not None and i in light.rows else None for i in ids], pa.string())
    return pa.table(columns, schema=schema)

"""The CelebA text parsers and read_index: real-format excerpts, quirks, bad rows, bad headers."""
from __future__ import annotations

import re

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from headrot.data import celeba_text as ct
from headrot.data.index import read_index
from headrot.rejects import count_by_reason, read_rejected, write_rejected

# ---------------------------------------------------------------------------
# The first rows of the real files, in their exact format (runs of spaces, the
# attribute header's trailing space, the landmark file's column alignment).

ATTR_HEADER = (
    "5_o_Clock_Shadow Arched_Eyebrows Attractive Bags_Under_Eyes Bald Bangs Big_Lips Big_Nose "
    "Black_Hair Blond_Hair Blurry Brown_Hair Bushy_Eyebrows Chubby Double_Chin Eyeglasses Goatee "
    "Gray_Hair Heavy_Makeup High_Cheekbones Male Mouth_Slightly_Open Mustache Narrow_Eyes No_Beard "
    "Oval_Face Pale_Skin Pointy_Nose Receding_Hairline Rosy_Cheeks Sideburns Smiling Straight_Hair "
    "Wavy_Hair Wearing_Earrings Wearing_Hat Wearing_Lipstick Wearing_Necklace Wearing_Necktie Young "
)
ATTR_ROWS = [
    "000001.jpg -1  1  1 -1 -1 -1 -1 -1 -1 -1 -1  1 -1 -1 -1 -1 -1 -1  1  1 -1  1 -1 -1  1 -1 -1  1 -1 -1 -1  1  1 -1  1 -1  1 -1 -1  1",
    "000002.jpg -1 -1 -1  1 -1 -1 -1  1 -1 -1 -1  1 -1 -1 -1 -1 -1 -1 -1  1 -1  1 -1 -1  1 -1 -1 -1 -1 -1 -1  1 -1 -1 -1 -1 -1 -1 -1  1",
    "000003.jpg -1 -1 -1 -1 -1 -1  1 -1 -1 -1  1 -1 -1 -1 -1 -1 -1 -1 -1 -1  1 -1 -1  1  1 -1 -1  1 -1 -1 -1 -1 -1  1 -1 -1 -1 -1 -1  1",
    "000004.jpg -1 -1  1 -1 -1 -1 -1 -1 -1 -1 -1 -1 -1 -1 -1  1 -1 -1 -1  1 -1 -1 -1 -1  1 -1 -1  1 -1 -1 -1 -1  1 -1  1 -1  1  1 -1  1",
    "000005.jpg -1  1  1 -1 -1 -1  1 -1 -1 -1 -1 -1 -1 -1 -1 -1 -1 -1  1 -1 -1 -1 -1  1  1 -1 -1  1 -1 -1 -1 -1 -1 -1 -1 -1  1 -1 -1  1",
]
LANDMARK_HEADER = "lefteye_x lefteye_y righteye_x righteye_y nose_x nose_y leftmouth_x leftmouth_y rightmouth_x rightmouth_y"
LANDMARK_ROWS = [
    "000001.jpg    69  109  106  113   77  142   73  152  108  154",
    "000002.jpg    69  110  107  112   81  135   70  151  108  153",
    "000003.jpg    76  112  104  106  108  128   74  156   98  158",
    "000004.jpg    72  113  108  108  101  138   71  155  101  151",
    "000005.jpg    66  114  112  112   86  119   71  147  104  150",
]
PARTITION_ROWS = ["000001.jpg 0", "000002.jpg 0", "000003.jpg 1", "000004.jpg 2", "000005.jpg 0"]
IDENTITY_ROWS = ["000001.jpg 2880", "000002.jpg 2937", "000003.jpg 8692", "000004.jpg 5805", "000005.jpg 9295"]


def attr_text(rows=ATTR_ROWS, count=None, header=ATTR_HEADER, eol="\n"):
    count = len(rows) if count is None else count
    return eol.join([str(count), header, *rows]) + eol


def landmark_text(rows=LANDMARK_ROWS, count=None, header=LANDMARK_HEADER, eol="\n"):
    count = len(rows) if count is None else count
    return eol.join([str(count), header, *rows]) + eol


def plain_text(rows, eol="\n"):
    return eol.join(rows) + eol


def write_root(root, attr=None, marks=None, parts=None, ident=None, light=None):
    root.mkdir(parents=True, exist_ok=True)
    (root / ct.ATTRIBUTES_FILE).write_bytes((attr if attr is not None else attr_text()).encode())
    (root / ct.LANDMARKS_FILE).write_bytes((marks if marks is not None else landmark_text()).encode())
    (root / ct.PARTITION_FILE).write_bytes((parts if parts is not None else plain_text(PARTITION_ROWS)).encode())
    if ident is not None:
        (root / ct.IDENTITY_FILE).write_bytes(ident.encode())
    if light is not None:
        (root / ct.LIGHT_FILE).write_bytes(light.encode())
    return root


def only_reason(parsed):
    assert len(parsed.rejects) == 1, parsed.rejects
    return parsed.rejects[0]


# ---------------------------------------------------------------------------
# The real format


def test_excerpts_parse_exactly():
    attrs = ct.parse_attributes(attr_text())
    assert len(attrs.header) == 40 and attrs.header[0] == "5_o_Clock_Shadow" and attrs.header[-1] == "Young"
    assert list(attrs.rows) == [f"00000{i}.jpg" for i in range(1, 6)]
    assert attrs.rows["000001.jpg"][:3] == (False, True, True) and attrs.rejects == [] and attrs.warnings == []
    marks = ct.parse_landmarks(landmark_text())
    assert marks.rows["000001.jpg"] == (69, 109, 106, 113, 77, 142, 73, 152, 108, 154)
    assert ct.parse_partition(plain_text(PARTITION_ROWS)).rows["000004.jpg"] == (2,)
    assert ct.parse_identity(plain_text(IDENTITY_ROWS)).rows["000001.jpg"] == (2880,)


def test_read_index_table(tmp_path):
    root = write_root(tmp_path / "celeba", ident=plain_text(IDENTITY_ROWS),
                      light="image_id,light\n000001.jpg,left\n000002.jpg,Right\n")
    index = read_index(str(root))
    t = index.table
    assert t.num_rows == 5 and index.rejected.num_rows == 0 and index.warnings == []
    assert t.schema.field("partition").type == pa.int8() and t.schema.field("identity").type == pa.int32()
    assert t.schema.field("landmarks").type == pa.list_(pa.float32(), 10)
    assert t.schema.field("Smiling").type == pa.bool_()
    assert t.column_names[4:44] == list(ct.parse_attributes(attr_text()).header)
    row = t.slice(0, 1).to_pylist()[0]
    assert row["image_id"] == "000001.jpg"
    assert row["path"] == str(root / "img_align_celeba" / "000001.jpg")
    assert row["identity"] == 2880 and row["partition"] == 0 and row["Attractive"] is True
    assert row["landmarks"] == [69, 109, 106, 113, 77, 142, 73, 152, 108, 154]
    assert t.column("light_label").to_pylist() == ["left", "right", None, None, None]
    assert index.summary()["per_partition"] == {"train": 3, "val": 1, "test": 1}


def test_identity_is_optional(tmp_path):
    index = read_index(str(write_root(tmp_path)))
    assert index.table.column("identity").to_pylist() == [-1] * 5
    assert index.table.column("light_label").null_count == 5


# ---------------------------------------------------------------------------
# Quirks of the real files


def test_crlf_trailing_spaces_blank_lines(tmp_path):
    attr = attr_text(rows=[r + "  " for r in ATTR_ROWS], eol="\r\n") + "\r\n\r\n"
    marks = landmark_text(eol="\r\n") + "\n\n   \n"
    parts = "\ufeff" + plain_text(PARTITION_ROWS, eol="\r\n") + "\r\n"
    index = read_index(str(write_root(tmp_path, attr, marks, parts)))
    assert index.table.num_rows == 5 and index.rejected.num_rows == 0 and index.warnings == []


def test_count_mismatch_is_a_warning(tmp_path):
    index = read_index(str(write_root(tmp_path, attr=attr_text(count=202599))))
    assert index.table.num_rows == 5
    assert index.warnings == [f"{ct.ATTRIBUTES_FILE}: line 1 declares 202599 images but the file has 5 rows"]
    assert index.summary()["warnings"] == index.warnings


# ---------------------------------------------------------------------------
# Bad rows: rejected with a reason naming file and line, never dropped


@pytest.mark.parametrize(
    "parse, text, image_id, reason",
    [
        (ct.parse_landmarks, landmark_text(LANDMARK_ROWS[:4] + ["000005.jpg    66  114  112  112   86  119   71  147  104"]),
         "000005.jpg", "list_landmarks_align_celeba.txt line 7: expected 10 numbers, got 9"),
        (ct.parse_landmarks, landmark_text(LANDMARK_ROWS[:1] + ["000002.jpg    69  110  107  x12   81  135   70  151  108  153"]),
         "000002.jpg", "list_landmarks_align_celeba.txt line 4: 'x12' is not a number (righteye_y)"),
        (ct.parse_landmarks, landmark_text(["000001.jpg nan 1 1 1 1 1 1 1 1 1"]),
         "000001.jpg", "list_landmarks_align_celeba.txt line 3: 'nan' is not a number (lefteye_x)"),
        (ct.parse_attributes, attr_text([ATTR_ROWS[0].replace(" 1 -1 -1  1", " 0 -1 -1  1", 1)]),
         "000001.jpg", None),
        (ct.parse_attributes, attr_text([ATTR_ROWS[0] + " -1"]),
         "000001.jpg", "list_attr_celeba.txt line 3: expected 40 values, got 41"),
        (ct.parse_partition, plain_text(["000001.jpg 0", "000002.jpg 3"]),
         "000002.jpg", "list_eval_partition.txt line 2: partition '3' is not 0, 1 or 2"),
        (ct.parse_partition, plain_text(["000001.jpg 0", "000002.jpg"]),
         "000002.jpg", "list_eval_partition.txt line 2: expected 1 value, got 0"),
        (ct.parse_identity, plain_text(["000001.jpg 2880", "000002.jpg -4"]),
         "000002.jpg", "identity_CelebA.txt line 2: identity '-4' is not a non-negative integer"),
        (ct.parse_partition, plain_text(["000001.jpg 0", "000002.jpg 0", "000001.jpg 1"]),
         "000001.jpg", "list_eval_partition.txt line 3: duplicate id 000001.jpg (first at line 1)"),
        (ct.parse_partition, plain_text(["000001.jpg 0", "../../x.jpg 0"]),
         "../../x.jpg", "list_eval_partition.txt line 2: unsafe image id '../../x.jpg' "
                        "(only letters, digits, '.', '_', '-'; no slashes)"),
        (ct.parse_light_labels, "image_id,light\n000001.jpg,left\n000002.jpg,up\n",
         "000002.jpg", "light_labels.csv line 3: light 'up' is not one of left, center, right"),
    ],
)
def test_bad_rows_are_rejected_with_reason(parse, text, image_id, reason):
    parsed = parse(text)
    got_id, got_reason = only_reason(parsed)
    assert got_id == image_id
    if reason is None:
        assert re.match(r"list_attr_celeba.txt line 3: '0' is not -1 or 1 \(\w+\)$", got_reason), got_reason
    else:
        assert got_reason == reason
    assert parsed.n_lines == len(parsed.rows) + len(parsed.rejects)


def test_read_index_rejects_and_keeps_accounting(tmp_path):
    marks = landmark_text(LANDMARK_ROWS[:4] + ["000005.jpg    66  114  112  112   86  119   71  147  104"])
    parts = plain_text(PARTITION_ROWS[:2] + ["000003.jpg 0", "000003.jpg 1", PARTITION_ROWS[4]])  # no 000004
    attr = attr_text(ATTR_ROWS + ["../../etc.jpg" + ATTR_ROWS[0][10:]])
    index = read_index(str(write_root(tmp_path, attr, marks, parts)))
    assert index.table.column("image_id").to_pylist() == ["000001.jpg", "000002.jpg"]
    rejected = dict(zip(index.rejected.column("image_id").to_pylist(), index.rejected.column("reason").to_pylist()))
    assert rejected == {
        "000003.jpg": "list_eval_partition.txt line 4: duplicate id 000003.jpg (first at line 3)",
        "000004.jpg": "missing from list_eval_partition.txt",
        "000005.jpg": "list_landmarks_align_celeba.txt line 7: expected 10 numbers, got 9",
        "../../etc.jpg": "list_attr_celeba.txt line 8: unsafe image id '../../etc.jpg' "
                         "(only letters, digits, '.', '_', '-'; no slashes)",
    }
    assert set(index.rejected.column("stage").to_pylist()) == {"read"}
    assert index.n_ids == index.n_rows + index.n_rejected == 6


def test_bad_bytes_do_not_stop_the_job(tmp_path):
    parts = (plain_text(PARTITION_ROWS[:4]) + "000005.jpg \xff\n").encode("latin-1").decode("latin-1")
    root = write_root(tmp_path, parts="")
    (root / ct.PARTITION_FILE).write_bytes(parts.encode("latin-1"))
    index = read_index(str(root))
    assert index.n_rows == 4 and index.rejected.column("image_id").to_pylist() == ["000005.jpg"]


# ---------------------------------------------------------------------------
# Malformed headers and missing files: ValueError naming file, line, what to do


@pytest.mark.parametrize(
    "parse, text, message",
    [
        (ct.parse_attributes, attr_text(header=ATTR_HEADER.replace("Young ", "")),
         r"list_attr_celeba.txt line 2: expected 40 attribute names, got 39"),
        (ct.parse_attributes, landmark_text(), r"list_attr_celeba.txt line 2: expected 40 attribute names, got 10"),
        (ct.parse_attributes, "<html><body>Not Found</body></html>\n",
         r"list_attr_celeba.txt line 1: expected the image count .*is this a CelebA"),
        (ct.parse_attributes, "", r"list_attr_celeba.txt: the file is empty"),
        (ct.parse_attributes, "5\n", r"list_attr_celeba.txt: missing the header line"),
        (ct.parse_landmarks, landmark_text(header=LANDMARK_HEADER.replace("nose_x nose_y", "nose_y nose_x")),
         r"list_landmarks_align_celeba.txt line 2: expected the landmark header"),
        (ct.parse_partition, "image_id,partition\nfoo,bar\n", r"list_eval_partition.txt: none of its 2 lines"),
        (ct.parse_partition, "\n\n", r"list_eval_partition.txt: the file is empty"),
        (ct.parse_light_labels, "id;light\n", r"light_labels.csv line 1: expected the CSV header `image_id,light`"),
    ],
)
def test_malformed_header_is_value_error(parse, text, message):
    with pytest.raises(ValueError, match=message):
        parse(text)


def test_missing_required_file(tmp_path):
    root = write_root(tmp_path)
    (root / ct.LANDMARKS_FILE).unlink()
    with pytest.raises(ValueError, match=r"list_landmarks_align_celeba.txt: not found at .*headrot synth"):
        read_index(str(root))


def test_missing_named_light_labels_file(tmp_path):
    root = write_root(tmp_path)
    with pytest.raises(ValueError, match=r"labels.csv: not found"):
        read_index(str(root), light_labels=str(tmp_path / "labels.csv"))


def test_header_error_in_read_index_names_file(tmp_path):
    root = write_root(tmp_path, attr=attr_text(header="a b c"))
    with pytest.raises(ValueError, match=r"list_attr_celeba.txt line 2"):
        read_index(str(root))


# ---------------------------------------------------------------------------
# Rejection files


def test_write_and_read_rejected(tmp_path):
    index = read_index(str(write_root(tmp_path / "d", marks=landmark_text(LANDMARK_ROWS[:4]))))
    root = str(tmp_path / "run")
    uri = write_rejected(root, "read", 0, index.rejected)
    assert uri.endswith("/rejected/read-00000.parquet")
    write_rejected(root, "decode", "3", [{"image_id": "000009.jpg", "reason": "empty file (0 bytes)"}])
    write_rejected(root, "read", 0, index.rejected)  # a rerun replaces, never duplicates
    table = read_rejected(root)
    assert table.to_pylist() == [
        {"image_id": "000009.jpg", "stage": "decode", "reason": "empty file (0 bytes)"},
        {"image_id": "000005.jpg", "stage": "read", "reason": "missing from list_landmarks_align_celeba.txt"},
    ]
    assert count_by_reason(table) == {
        "decode: empty file (N bytes)": 1,
        "read: missing from list_landmarks_align_celeba.txt": 1,
    }
    with pytest.raises(ValueError, match="unsafe"):
        write_rejected(root, "../x", 0, [])
    assert read_rejected(str(tmp_path / "nothing")).num_rows == 0


def test_count_by_reason_groups_kinds():
    table = pa.table({
        "image_id": ["a", "b", "c"], "stage": ["read"] * 3,
        "reason": ["x.txt line 7: expected 10 numbers, got 9", "x.txt line 12: expected 10 numbers, got 8",
                   "x.txt line 3: 'q' is not a number (nose_x)"],
    })
    assert count_by_reason(table) == {"read: x.txt line N: expected N numbers, got N": 2,
                                      "read: x.txt line N: '…' is not a number (nose_x)": 1}


# ---------------------------------------------------------------------------
# Properties: arbitrary text never crashes a parser and never loses a row

_CELEBA_ISH = st.lists(
    st.sampled_from(list("0123456789 -1.jpg\t\r\n,xe+/") + ["000001.jpg", " 1", " -1", "\n", "\u2028", "\x0c"]),
    max_size=120,
).map("".join)
_TEXT = st.one_of(st.text(max_size=300), _CELEBA_ISH)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=_TEXT, which=st.sampled_from(["attr", "marks", "part", "ident", "light"]), with_header=st.booleans())
def test_parsers_never_crash_nor_lose_rows(body, which, with_header):
    parse, prefix = {
        "attr": (ct.parse_attributes, f"7\n{ATTR_HEADER}\n"),
        "marks": (ct.parse_landmarks, f"7\n{LANDMARK_HEADER}\n"),
        "part": (ct.parse_partition, ""),
        "ident": (ct.parse_identity, ""),
        "light": (ct.parse_light_labels, "image_id,light\n"),
    }[which]
    text = (prefix if with_header else "") + body
    try:
        parsed = parse(text)
    except ValueError:
        return
    assert parsed.n_lines == len(parsed.rows) + len(parsed.rejects)
    data_lines = [l for l in text.lstrip("\ufeff").split("\n") if l.strip()]
    header_lines = {"attr": 2, "marks": 2, "light": 1}.get(which, 0)
    assert parsed.n_lines == len(data_lines) - header_lines
    assert all(reason.startswith(parsed.file + " line ") for _, reason in parsed.rejects)


@settings(max_examples=100, deadline=None)
@given(rows=st.lists(st.tuples(st.sampled_from(["000001.jpg", "000002.jpg", "a.jpg", "../b.jpg", ""]),
                               st.lists(st.sampled_from(["1", "-1", "0", "x", "2"]), max_size=42)),
                     max_size=12))
def test_attribute_rows_accounting(rows):
    text = attr_text([" ".join([i, *v]) for i, v in rows])
    parsed = ct.parse_attributes(text)
    nonblank = [r for r in rows if (r[0] or r[1])]
    assert len(parsed.rows) + len(parsed.rejects) == len(nonblank)

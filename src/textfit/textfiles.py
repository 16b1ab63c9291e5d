"""Text files a user gives textfit, decoded in one place: the data files (data/read.py, data/stream.py) and the
YAML files of --config and --tune-space. A file that is not in the encoding expected is named in one line with
the byte that failed and the encoding it most likely is in (charset-normalizer's guess).

    text = decode("reviews.csv", raw, "utf-8")                        # UsageError: ... pass --encoding cp1252
    text = read_yaml_text("--config my.yaml", Path("my.yaml"))        # UTF-8, or UTF-16/32 with a BOM
"""

from __future__ import annotations

from pathlib import Path

from textfit.errors import UsageError

BOMS = (
    (b"\xff\xfe\x00\x00", "utf-32"),
    (b"\x00\x00\xfe\xff", "utf-32"),
    (b"\xff\xfe", "utf-16"),
    (b"\xfe\xff", "utf-16"),
)


def read_yaml_text(flag: str, path: Path) -> str:
    """A YAML file's text: UTF-8 (a BOM stripped), or UTF-16/32 with their BOM, as YAML 1.1 allows; anything
    else is one line that names the file and the encoding it seems to be in."""
    raw = path.read_bytes()
    for bom, enc in BOMS:
        if raw.startswith(bom):
            return decode(flag, raw, enc, "save it as UTF-8")
    return decode(flag, raw, "utf-8", "save it as UTF-8 (it looks like {guess})")


def codec(encoding: str) -> str:
    """The Python codec for an --encoding: UTF-8 read as utf-8-sig, so that a BOM is stripped."""
    return "utf-8-sig" if encoding.lower().replace("_", "-") in ("utf-8", "utf8") else encoding


def decode(path: str, raw: bytes, encoding: str, fix: str | None = None) -> str:
    """`raw` as text in `encoding`, or one line naming the file, the byte, and the fix: `fix` (a sentence with
    {guess} for the likely encoding), else --encoding with a guess."""
    enc = codec(encoding)
    try:
        return raw.decode(enc)
    except LookupError:
        raise UsageError(
            f"--encoding {encoding}: unknown encoding; use a Python codec name such as utf-8, gb18030 or latin-1"
        ) from None
    except UnicodeDecodeError as e:
        guess = guess_encoding(raw[:200_000])
        if fix is not None:
            likely = guess if guess and guess != "utf_8" else "another encoding"
            raise UsageError(
                f"{path}: not valid {encoding} (byte 0x{raw[e.start]:02x} at offset {e.start}); "
                + fix.format(guess=likely)
            ) from None
        hint = (
            f"--encoding {guess} (a guess: check a few rows)"
            if guess and guess != "utf_8"
            else "--encoding with the file's encoding (e.g. gb18030)"
        )
        raise UsageError(
            f"{path}: not valid {encoding} (byte 0x{raw[e.start]:02x} at offset {e.start}); pass {hint}"
        ) from None


# Encodings files are written in, most used first: a guess among charset-normalizer's candidates takes the
# first of these it found, so that Western European text is advised cp1252 (or Latin-1), not a Baltic or DOS
# code page that decodes the same bytes into other letters without an error.
COMMON_ENCODINGS = [
    "utf_16",
    "gb18030",
    "gbk",
    "big5",
    "shift_jis",
    "cp932",
    "euc_jp",
    "euc_kr",
    "cp1251",
    "koi8_r",
    "cp1252",
    "latin_1",
    "iso8859_15",
    "cp1250",
    "iso8859_2",
]


def guess_encoding(raw: bytes) -> str | None:
    """The encoding a file most likely is in: charset-normalizer's candidates, the most used of them first
    (COMMON_ENCODINGS), else its best; cp1252 where it found none and the bytes decode as cp1252."""
    from charset_normalizer import from_bytes

    matches = from_bytes(raw)
    found: list[str] = []
    for m in matches:
        found += [m.encoding, *getattr(m, "could_be_from_charset", [])]
    for enc in COMMON_ENCODINGS:
        if enc in found:
            return enc
    best = matches.best()
    if best is not None:
        return str(best.encoding)
    try:
        raw.decode("cp1252")
        return "cp1252"
    except UnicodeDecodeError:
        return None

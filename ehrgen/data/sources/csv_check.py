"""A structural pass over a raw CSV before polars reads it: every line is accounted for.

polars' CSV reader is fast but lenient in ways that lose rows silently: an unbalanced quote
swallows the rest of the file into one field, a row with extra fields is truncated, and a row
with too few is padded with nulls. This pass streams the bytes once (vectorised, bounded memory)
and returns, per data line, whether it is usable, so the reader can drop and *count* the bad ones.
It also turns unreadable files (truncated gzip, invalid UTF-8) into one line naming the file and
line, and never echoes raw rows: error messages from CSV parsers quote the data, and raw patient
rows must not land in logs.

Rules (MIMIC tables hold no multi-line fields): a line is a record; a quote opened on a line must
close on it (else the file is refused: ``line N: unbalanced quote``); a record whose field count
(commas outside quotes + 1) differs from the header's is malformed; an empty line is blank.
"""

from __future__ import annotations

import codecs
import gzip
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ehrgen.errors import InputError

CHUNK_BYTES = 1 << 20  # as fast as 8 MB, and its temporaries stay small
QUOTE, COMMA, NEWLINE, CR = 34, 44, 10, 13


@dataclass(frozen=True)
class CsvLayout:
    """What the structural pass found: header width, data records, and the unusable ones."""

    path: Path
    header_fields: int
    records: int  # lines after the header (what polars turns into rows)
    malformed: np.ndarray  # 0-based record indices whose field count differs from the header's
    blank: np.ndarray  # 0-based record indices of empty lines

    @property
    def unusable(self) -> np.ndarray:
        return np.union1d(self.malformed, self.blank)


def _open(path: Path):
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")  # noqa: SIM115


class _Scanner:
    """Carries quote parity and the unfinished last line from one chunk to the next."""

    def __init__(self, path: Path):
        self.path = path
        self.line = 0  # completed physical lines
        self.in_quote = 0
        self.partial_commas = 0
        self.partial_bytes = 0  # bytes of the unfinished line, '\r' excluded
        self.header_fields: int | None = None
        self.records = 0  # completed lines after the header
        # Only the unusable lines are kept (0-based record indices): memory follows the bad lines,
        # not the file (a per-line array would be 0.5 GB for MIMIC-IV-sized prescriptions).
        self.malformed: list[np.ndarray] = []
        self.blank: list[np.ndarray] = []

    def feed(self, buf: bytes) -> None:
        arr = np.frombuffer(buf, dtype=np.uint8)
        # Quote parity after each byte (uint8 cumsum wraps at 256, parity survives); '""' escapes toggle twice.
        inside = (np.cumsum(arr == QUOTE, dtype=np.uint8) & 1) ^ np.uint8(self.in_quote)
        newline = arr == NEWLINE
        quoted_newline = newline & (inside == 1)
        if quoted_newline.any():
            first = int(np.argmax(quoted_newline))
            at = self.line + int(newline[:first].sum()) + 1
            raise InputError(
                f"{self.path} line {at}: unbalanced quote (a quoted field does not close on its line); "
                "fix the file or re-export it as CSV"
            )
        ends = np.flatnonzero(newline)
        commas = np.flatnonzero((arr == COMMA) & (inside == 0))
        counts = np.diff(np.searchsorted(commas, ends), prepend=0)
        starts = np.concatenate(([0], ends[:-1] + 1)) if len(ends) else ends
        lengths = ends - starts
        lengths -= (lengths > 0) & (arr[np.maximum(ends - 1, 0)] == CR)  # CRLF
        if len(ends):
            counts[0] += self.partial_commas
            lengths[0] += self.partial_bytes
            self.partial_commas = len(commas) - int(np.searchsorted(commas, ends[-1]))
            tail = arr[ends[-1] + 1 :]
        else:
            self.partial_commas += len(commas)
            tail = arr
        self.partial_bytes = (
            (0 if len(ends) else self.partial_bytes) + len(tail) - int(len(tail) > 0 and tail[-1] == CR)
        )
        self.in_quote = int(inside[-1]) if len(arr) else self.in_quote
        self._lines(np.where(lengths > 0, counts + 1, 0))

    def _lines(self, fields: np.ndarray) -> None:
        """``fields``: per completed line, its field count (0 when blank)."""
        if not len(fields):
            return
        self.line += len(fields)
        if self.header_fields is None:
            self.header_fields = int(fields[0])
            fields = fields[1:]
        self.malformed.append(self.records + np.flatnonzero((fields != 0) & (fields != self.header_fields)))
        self.blank.append(self.records + np.flatnonzero(fields == 0))
        self.records += len(fields)

    def finish(self) -> CsvLayout:
        if self.in_quote:
            raise InputError(
                f"{self.path} line {self.line + 1}: unbalanced quote (a quoted field never closes)"
            )
        if self.partial_bytes:  # last line without a trailing newline
            self._lines(np.array([self.partial_commas + 1]))
        if self.header_fields is None or self.header_fields == 0:
            raise InputError(f"{self.path}: empty file, expected a CSV header line")
        empty = np.zeros(0, np.int64)
        return CsvLayout(
            path=self.path,
            header_fields=self.header_fields,
            records=self.records,
            malformed=np.concatenate([empty, *self.malformed]),
            blank=np.concatenate([empty, *self.blank]),
        )


def check_csv(path: str | Path, chunk_bytes: int = CHUNK_BYTES) -> CsvLayout:
    """Stream ``path`` (``.csv`` or ``.csv.gz``) once; refuse unreadable files in one line."""
    path = Path(path)
    scanner = _Scanner(path)
    utf8 = codecs.getincrementaldecoder("utf-8")()
    try:
        with _open(path) as handle:
            while chunk := handle.read(chunk_bytes):
                try:
                    utf8.decode(chunk)
                except UnicodeDecodeError as err:
                    line = scanner.line + chunk[: err.start].count(b"\n") + 1
                    raise InputError(f"{path} line {line}: not valid UTF-8 text ({err.reason})") from None
                scanner.feed(chunk)
            utf8.decode(b"", final=True)
    except UnicodeDecodeError:
        raise InputError(f"{path}: ends inside a UTF-8 character (truncated?)") from None
    except (OSError, EOFError, zlib.error) as err:
        reason = getattr(err, "strerror", None) or str(err) or type(err).__name__
        raise InputError(f"{path}: cannot be read ({reason}); is the file truncated or corrupt?") from None
    return scanner.finish()

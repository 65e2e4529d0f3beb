"""Row checks shared by every task family's layout step (see ``families``): each failure is one line naming
the file or hub split, the row and the column."""

from __future__ import annotations

from .tasks import ConfigError, Task


def map_label(value, task: Task, where: str, row: int | None = None) -> int:
    mapping = {str(k): v for k, v in task.label_map.items()}
    if str(value) not in mapping or value is None:
        at = f": row {row}" if row is not None else ""
        problem = "the label is null" if value is None else f"label {value!r} is not in {task.name}.label_map {sorted(mapping)}"
        raise ConfigError(f"{where}{at}: column '{task.label}': {problem}")
    return mapping[str(value)]


def check_not_null(ds, column: str, where: str) -> None:
    import pyarrow.compute as pc

    values = ds.with_format("arrow")[column]
    if values.null_count:
        row = pc.index(pc.is_null(values), True).as_py()
        raise ConfigError(f"{where}: row {row + 1}: column '{column}': null")


def check_text(ds, columns, where: str, what: str = "text") -> None:
    """Every row of the text columns holds text: not null, not a number, valid UTF-8, not empty or only whitespace
    (a few Arrow passes each). ``what`` names the text in the message (e.g. "summary")."""
    import pyarrow as pa
    import pyarrow.compute as pc

    for column in columns:
        dtype = getattr(ds.features[column], "dtype", None)
        values = ds.with_format("arrow")[column]
        if dtype == "null" or values.null_count:
            row = pc.index(pc.is_null(values), True).as_py()
            raise ConfigError(f"{where}: row {row + 1}: column '{column}': null, not text")
        if dtype not in ("string", "large_string"):
            raise ConfigError(f"{where}: row 1: column '{column}': {ds[0][column]!r} is {dtype or 'not a value'}, not text")
        try:
            values.validate(full=True)
        except pa.ArrowInvalid:  # Arrow holds a jsonl file's bytes unchecked; find the row that is not UTF-8
            for row, raw in enumerate(values.cast(pa.binary()).to_pylist()):
                try:
                    raw.decode("utf-8")
                except UnicodeDecodeError as error:
                    raise ConfigError(f"{where}: row {row + 1}: column '{column}': bytes that are not UTF-8 "
                                      f"(0x{raw[error.start]:02x} at byte {error.start})") from None
            raise
        row = pc.index(pc.equal(pc.utf8_trim_whitespace(values), ""), True).as_py()
        if row >= 0:
            raise ConfigError(f"{where}: row {row + 1}: column '{column}': an empty {what}"
                              + (" (only whitespace)" if values[row].as_py() else ""))


def origin(task: Task, split: str) -> str:
    """Where a split's rows come from, for messages: its file, or the hub id (and config) and the split."""
    src = task.source
    if "files" in src and split in src["files"]:
        return src["files"][split]
    if "hub" in src:
        config = f" ({src['config']})" if src.get("config") else ""
        return f"{src['hub']}{config} split '{split}'"
    return f"split '{split}'"

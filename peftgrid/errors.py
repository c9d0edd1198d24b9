"""The errors a user sees, each a single line naming the key, file or cell.

Two families, because they end a job differently:
- `UserError` subclasses (config, data, model, method) are mistakes to fix: the job stops with
  one line and exit status 1, before any expensive work where possible.
- `CellFailure` subclasses are findings of the study (a 4-bit method without CUDA, a NaN loss,
  out of memory, a tokenizer that cannot write the target language): the cell is recorded as
  `failed` with the reason and the job succeeds, so the summary lists it.
"""


class UserError(Exception):
    """A one-line, user-facing problem naming what to fix."""


class ConfigError(UserError, ValueError):
    """A config problem naming the offending key."""


class DataError(UserError, ValueError):
    """A data problem naming the file, split or column."""


class ModelError(UserError, ValueError):
    """A model problem naming the path or hub id."""


class MethodError(UserError, RuntimeError):
    """A method that cannot be applied as configured (peft refuses the model, a bad field value)."""


class CellFailure(RuntimeError):
    """A recorded finding: the cell is marked failed with this one-line reason."""


class Preempted(RuntimeError):
    """SIGTERM arrived; a checkpoint was saved and the next run resumes from it."""


def did_you_mean(name: str, known) -> str:
    """' — did you mean 'lora'?' for a near miss, else the list of known names."""
    import difflib

    known, name = sorted(map(str, known)), str(name)
    by_case = {k.lower(): k for k in known}  # LoRA -> lora: the README's prose spells names its own way
    longer = [k for k in known if len(name) >= 2 and k.lower().startswith(name.lower())]  # f1 -> f1_macro
    close = difflib.get_close_matches(name.lower(), list(by_case), n=1, cutoff=0.6)
    meant = by_case.get(name.lower()) or (longer[0] if len(longer) == 1 else None) or (by_case[close[0]] if close else None)
    if meant:
        return f" — did you mean {meant!r}?"
    shown = ", ".join(known[:30]) + (", ..." if len(known) > 30 else "")
    return f" (known: {shown})"


def first_line(exc: BaseException, typed: bool = True, limit: int | None = None) -> str:
    """An exception as one line for a status column or a message: `Type: its first line` (with
    `typed=False` the first line alone; `limit`: that line cut to so many characters); the type's
    name when it has no text."""
    text = str(exc).strip()
    if not text:
        return type(exc).__name__
    line = text.splitlines()[0][:limit]
    return f"{type(exc).__name__}: {line}" if typed else line

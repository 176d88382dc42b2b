"""One error type for every problem a user can fix (bad file, bad option, bad zoo).

The CLI prints these as one line on stderr and exits with code 2; the dashboard shows
them as an inline error.  Anything else that escapes is a bug.
"""


#: how many characters of a value an error message shows (a hostile file's 80 MB value is not echoed back)
SHOWN = 80


def shown(value, limit: int = SHOWN) -> str:
    """``repr(value)``, cut to ``limit`` characters with the length said, for error messages."""
    text = repr(value) if not isinstance(value, str) else repr(value)
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… ({len(text):,} characters)"


class TatrError(ValueError):
    """A problem with the user's input, stated with what is wrong and how to fix it."""


class CheckpointError(TatrError):
    """A checkpoint file cannot be read, or its contents do not fit the other models."""


OUT_OF_MEMORY = ("out of memory: lower --sample (images evaluated per task), --exemplars (gradients, Fisher, "
                 "RegMean) or --batch (AdaMerging, Surgery), or use a machine with more memory; nothing was written")


def out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is the host or a GPU running out of memory (``torch.OutOfMemoryError`` is a
    RuntimeError; the CPU allocator raises a plain RuntimeError)."""
    text = str(exc)
    return (isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError"
            or "out of memory" in text.lower() or "can't allocate memory" in text
            or "DefaultCPUAllocator: can't allocate" in text)

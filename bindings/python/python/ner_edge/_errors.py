"""Exceptions raised by the ner-edge runtime.

Each carries the runtime's own one-line message (the file, line or byte where the problem is).
I/O errors are plain ``OSError`` subclasses (``FileNotFoundError``, ``PermissionError``, ...).
"""


class NerEdgeError(Exception):
    """Base class of every ner-edge error except I/O errors (those are ``OSError``)."""


class BundleError(NerEdgeError, ValueError):
    """A bundle or label pack is corrupt, truncated, of another version, or unusable (e.g. a
    pack adapted on another bundle)."""


class InputError(NerEdgeError, ValueError):
    """Input text or a support set is malformed (bad tags, spans outside the text, ...)."""


class UsageError(NerEdgeError, ValueError):
    """An argument is invalid: an unknown entity type name, a type defined twice, an option
    combination the runtime refuses, a line containing a newline, ..."""


class EncoderError(NerEdgeError, RuntimeError):
    """The bundle's encoder graph could not be loaded or run."""


# Shown and pickled as ner_edge.<Name>, where they are public.
for _cls in (NerEdgeError, BundleError, InputError, UsageError, EncoderError):
    _cls.__module__ = "ner_edge"
del _cls

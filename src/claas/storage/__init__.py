"""The adapter store: immutable, numbered versions of LoRA adapters on disk.

A version is a PEFT directory (``adapter_config.json``,
``adapter_model.safetensors``, optionally ``optimizer.pt``; the store never looks
inside them) plus a ``manifest.json``. Layout under ``root``::

    <namespace>/<name>/versions/000000/   the files of version 0 and its manifest
    <namespace>/<name>/LATEST             {"version": N}, the ``latest`` alias
    <namespace>/<name>/.staging/          versions being written or retired
    <namespace>/.staging/<name>~<hex>     adapters being created or deleted
    <namespace>/.<name>.lock              the cross-process lock of one adapter

Crash safety rests on one rule: every visible change is a single atomic rename
of something fsynced first. A version is written into staging, manifest last,
and renamed into ``versions/``; ``LATEST`` is replaced through a temporary file;
a new adapter is built whole (version 0 and ``LATEST``) and renamed into place;
retiring or deleting renames into staging before removing. So a crash leaves
every version complete or absent, and staging leftovers are removed whenever
the adapter's lock is next free.
"""

from claas.storage._manifest import FORMAT_VERSION
from claas.storage.base import AdapterStore, WriteFn, summarize, summarize_all
from claas.storage.local import LocalAdapterStore

__all__ = [
    "FORMAT_VERSION",
    "AdapterStore",
    "LocalAdapterStore",
    "WriteFn",
    "summarize",
    "summarize_all",
]

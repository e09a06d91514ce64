"""Datasets named by a bucket URI (``gs://bucket/path``, ``s3://bucket/path``), read through
the artifact store the operator configured (``TUNELAB_ARTIFACT_STORE``: fsspec's gcsfs and
s3fs, with the options given for each scheme).

Vertex AI names its datasets by ``gs://`` URIs, and code written for it keeps doing so; this
lets that code tune here unchanged when the operator gives tunelab read access to the bucket.
A scheme the operator did not list is refused with the setting that enables it.

A read is bounded like an upload (``MAX_FILE_BYTES``): the object's size is asked first and a
larger object refused before any byte is read; then one ranged read of at most the limit + 1
bytes, so an object that grows between the two still cannot make the server read more. Every
failure becomes a tunelab error naming the URI and what to do, never the store's traceback or
a path on the server.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any

from tunelab.data.examples import Example
from tunelab.data.parse import MAX_FILE_BYTES, read_bytes
from tunelab.errors import (
    DatasetError,
    FailedPrecondition,
    InvalidArgument,
    PermissionDenied,
    Problem,
    TunelabError,
    Unavailable,
)

log = logging.getLogger(__name__)

# The schemes a dataset URI may use, with the package that reads each and tunelab's extra
# that installs it.
PACKAGES = {"gs": ("gcsfs", "gcs"), "s3": ("s3fs", "s3")}
SETTING = "TUNELAB_ARTIFACT_STORE"
_URI = re.compile(r"^(?P<scheme>[a-z][a-z0-9+.-]*)://(?P<bucket>[^/]*)/?(?P<key>.*)$")
# Errors raised when the server has no credentials at all, by class name so that neither
# botocore nor google-auth has to be installed to recognise them.
_NO_CREDENTIALS = {"NoCredentialsError", "DefaultCredentialsError", "PartialCredentialsError"}
_UPLOAD_INSTEAD = ("Or upload the file to tunelab (POST /v1beta/files) and pass the name it "
                   "answers, 'files/ID'.")


def bucket_scheme(uri: str) -> str | None:
    """'gs' or 's3' for a bucket URI tunelab knows how to read, else None."""
    m = _URI.match(uri.strip())
    return m["scheme"] if m and m["scheme"] in PACKAGES else None


class ArtifactStore:
    """Reads dataset objects from the buckets of the schemes in ``schemes`` (scheme →
    fsspec storage options, as ``Settings.artifact_store``)."""

    def __init__(self, schemes: Mapping[str, Mapping[str, Any]],
                 limit: int = MAX_FILE_BYTES):
        self.schemes, self.limit = schemes, limit

    def examples(self, uri: str) -> list[Example]:
        """The examples of the object at ``uri``, parsed as an upload of that name is (the
        format follows its extension; every problem reported at once, by row)."""
        data = self.read(uri)
        if not data:
            raise DatasetError([Problem("the file is empty", uri)])
        return read_bytes(data, uri)

    def read(self, uri: str) -> bytes:
        """The object's bytes, at most ``limit`` of them."""
        uri = uri.strip()
        m = _URI.match(uri)
        scheme = bucket_scheme(uri)
        if m is None or scheme is None:
            raise InvalidArgument(f"'{uri}' is not a gs:// or s3:// URI. {_UPLOAD_INSTEAD}")
        if not m["bucket"] or not m["key"] or m["key"].endswith("/"):
            raise InvalidArgument(
                f"'{uri}' does not name one object: give the bucket and the file's path, e.g. "
                f"{scheme}://my-bucket/datasets/train.jsonl.")
        if scheme not in self.schemes:
            raise InvalidArgument(
                f"'{uri}' is in a {scheme}:// bucket, and this tunelab server reads no {scheme}:// "
                f"datasets: its operator enables them with the setting {SETTING} (e.g. "
                f"{SETTING}='{{\"{scheme}\": {{}}}}'; docs/sdks.md, \"Datasets in a bucket\"). "
                f"{_UPLOAD_INSTEAD}")
        path = f"{m['bucket']}/{m['key']}"
        try:
            fs = self._filesystem(scheme)
            fs.invalidate_cache(path)
            info = fs.info(path)
            if info.get("type") == "directory":
                raise InvalidArgument(
                    f"'{uri}' is a folder: name one JSONL, CSV or JSON file in it.")
            size = info.get("size")
            if isinstance(size, int) and size > self.limit:
                raise self._too_large(uri, size)
            data = fs.cat_file(path, start=0, end=self.limit + 1)
        except TunelabError:
            raise
        except FileNotFoundError:
            raise InvalidArgument(
                f"'{uri}' was not found: check the bucket's and the object's names (they are "
                "case-sensitive).") from None
        except PermissionError:
            raise PermissionDenied(
                f"This tunelab server may not read '{uri}': its operator grants the server's "
                f"{scheme}:// credentials read access to the object ({SETTING} holds them, or "
                f"the {PACKAGES[scheme][0]} defaults apply). {_UPLOAD_INSTEAD}") from None
        except Exception as e:  # the store's own error, a network failure, a bad option
            log.warning("reading %s failed: %s: %s", uri, type(e).__name__, e)
            if type(e).__name__ in _NO_CREDENTIALS:
                raise FailedPrecondition(
                    f"This tunelab server has no credentials for {scheme}:// buckets, so it "
                    f"cannot read '{uri}': its operator gives them in {SETTING} or the "
                    f"{PACKAGES[scheme][0]} defaults. {_UPLOAD_INSTEAD}") from None
            raise Unavailable(
                f"The {scheme}:// store could not be reached to read '{uri}' "
                f"({type(e).__name__}). Try again in a minute; if it keeps failing, tell the "
                f"server's operator (the store's address and options are {SETTING}).",
                retry_after=30) from None
        if len(data) > self.limit:  # it grew after its size was read
            raise self._too_large(uri, len(data))
        return data

    def _filesystem(self, scheme: str) -> Any:
        """fsspec's filesystem for ``scheme`` with the operator's options (fsspec keeps one
        instance per set of options, so connections are reused)."""
        import fsspec

        package, extra = PACKAGES[scheme]
        try:
            return fsspec.filesystem(scheme, **dict(self.schemes[scheme]))
        except ImportError:
            raise FailedPrecondition(
                f"This tunelab server is set to read {scheme}:// datasets but lacks the "
                f"'{package}' package: its operator installs it (pip install "
                f"'tunelab[{extra}]'). {_UPLOAD_INSTEAD}") from None

    def _too_large(self, uri: str, size: int) -> InvalidArgument:
        return InvalidArgument(
            f"'{uri}' holds {size:,} bytes; a dataset may hold at most {self.limit:,} bytes "
            f"({self.limit // 2**20} MB, as an upload): remove examples or split it.")

"""A tenant's adapter namespace backed by a store: an S3 bucket prefix, a folder, a URI.

``AdapterSourceSpec`` is the config (file or admin API) of one namespace; ``open_namespace``
turns it into an ``AdapterNamespace``, whose ``lookup(name)`` says whether the store
holds an adapter of that name and, if so, returns the ``AdapterSource`` the registry
registers it from (``materialize`` copies the files, within the limits, and validation
follows exactly as for any registration).

Names are looked up only under the namespace's own root: a name is one path component
(``adapters.naming``'s rule, without ``..``), so nothing outside the root can be named.

Layouts: ``<root>/<name>/adapter_config.json`` and ``<root>/<name>/adapter_model.safetensors``
(the folder PEFT's ``save_pretrained`` writes), where ``<root>`` is ``s3://bucket/prefix``,
the folder, or the URI; or, where no such folder is, ``<root>/<name>.tar.gz``: that folder
archived. An archive is fetched within ``max_archive_bytes`` and unpacked by
``adapters.archive`` exactly as an uploaded one is (plain files and folders only, no
``..``, no links or devices, unpacked bytes bounded: a tar bomb gets the upload's
refusal), then validated as a folder is.

Credentials of an S3 namespace are named, never given: ``access_key_env`` and
``secret_key_env`` are environment variable names read when the namespace is opened, so
no secret is ever stored, listed or echoed.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable, Mapping
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field, model_validator

from adapters.archive import extract_archive, safe_relative_path
from adapters.errors import (
    AdapterError,
    SourceNotAllowedError,
    SourceUnavailableError,
    UnsafeArchiveError,
)
from adapters.limits import AdapterLimits
from adapters.naming import NAME_PATTERN
from adapters.sources import (
    DEFAULT_PROTOCOLS,
    LOCAL_PROTOCOLS,
    AdapterSource,
    FsspecSource,
    LocalDirectorySource,
    copy_bounded,
)

ENV_NAME = re.compile(r"[A-Z_][A-Z0-9_]{0,127}")
PREFIX = re.compile(r"([A-Za-z0-9!_.*'()-]+/)*")
"""An S3 key prefix: empty, or safe key characters in ``/``-terminated parts."""
BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
ARCHIVE_SUFFIX = ".tar.gz"
"""An adapter folder archived in a namespace: ``<root>/<name>.tar.gz``."""
SOURCE_LABEL = "<source>"
"""What a tenant's error shows in place of its namespace's root on this machine."""

logger = logging.getLogger(__name__)


class SourceKind(StrEnum):
    S3 = "s3"
    FOLDER = "folder"
    URI = "uri"


_FIELDS = {
    SourceKind.S3: {"bucket", "prefix", "endpoint", "region", "access_key_env", "secret_key_env"},
    SourceKind.FOLDER: {"path"},
    SourceKind.URI: {"uri"},
}


class AdapterSourceSpec(BaseModel):
    """Where a tenant's adapters are fetched from when a request names one the registry
    does not hold yet, and how much of the gateway's disk cache they may take."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: SourceKind = Field(description="s3 (a bucket prefix), folder, or uri (fsspec).")
    bucket: str | None = Field(default=None, description="s3: the bucket.")
    prefix: str = Field(
        default="", description="s3: key prefix ending with '/', e.g. 'tenants/acme/' ('': root)."
    )
    endpoint: str | None = Field(
        default=None,
        description="s3: endpoint URL of an S3-compatible server (MinIO, Ceph...); default: AWS.",
    )
    region: str | None = Field(default=None, description="s3: region (default: us-east-1).")
    access_key_env: str | None = Field(
        default=None, description="s3: NAME of the environment variable holding the access key."
    )
    secret_key_env: str | None = Field(
        default=None, description="s3: NAME of the environment variable holding the secret key."
    )
    path: Path | None = Field(
        default=None, description="folder: a folder under registry.allowed_roots."
    )
    uri: str | None = Field(
        default=None, description="uri: fsspec URI of the folder holding the adapters."
    )
    max_adapters: int | None = Field(
        default=None, ge=1, description="Most of this tenant's adapters kept on disk at once."
    )
    max_mib: float | None = Field(
        default=None, gt=0, description="Most MiB of this tenant's adapters kept on disk."
    )

    @model_validator(mode="after")
    def _fields_of_kind(self) -> AdapterSourceSpec:
        given = {
            f
            for f in ("bucket", "endpoint", "region", "access_key_env", "secret_key_env")
            if getattr(self, f) is not None
        }
        given |= {"prefix"} if self.prefix else set()
        given |= {f for f in ("path", "uri") if getattr(self, f) is not None}
        foreign = sorted(given - _FIELDS[self.kind])
        if foreign:
            raise ValueError(f"fields {foreign} do not apply to kind '{self.kind}'")
        if self.kind is SourceKind.S3:
            self._check_s3()
        elif self.kind is SourceKind.FOLDER and self.path is None:
            raise ValueError("kind 'folder' needs 'path'")
        elif self.kind is SourceKind.URI:
            if not self.uri:
                raise ValueError("kind 'uri' needs 'uri'")
            if "@" in self.uri or "?" in self.uri:
                raise ValueError(
                    "the uri must not carry credentials or a query; give them to the "
                    "gateway's environment (fsspec reads them there)"
                )
        return self

    def _check_s3(self) -> None:
        if self.bucket is None or not BUCKET.fullmatch(self.bucket):
            raise ValueError("kind 's3' needs 'bucket' (a valid bucket name)")
        if not PREFIX.fullmatch(self.prefix) or ".." in self.prefix.split("/"):
            raise ValueError("prefix must be empty or '/'-terminated key parts, without '..'")
        if self.endpoint is not None and not re.fullmatch(r"https?://[^\s/@?#]+/?", self.endpoint):
            raise ValueError("endpoint must be http(s)://host[:port], without credentials")
        for field in ("access_key_env", "secret_key_env"):
            value = getattr(self, field)
            if value is not None and not ENV_NAME.fullmatch(value):
                raise ValueError(f"{field} must be an environment variable NAME (A-Z, 0-9, _)")
        if (self.access_key_env is None) != (self.secret_key_env is None):
            raise ValueError("give both access_key_env and secret_key_env, or neither")

    @property
    def max_bytes(self) -> int | None:
        return None if self.max_mib is None else int(self.max_mib * 1024 * 1024)


def is_namespace_name(name: str) -> bool:
    """Whether ``name`` may be looked up in a namespace: one plain path component.

    The adapter naming rule (lower-case letters, digits, ``.``, ``_``, ``-``, starting
    with a letter or digit), and never ``..`` anywhere: no separators, no absolute
    paths, no schemes, no traversal.
    """
    return isinstance(name, str) and bool(NAME_PATTERN.fullmatch(name)) and ".." not in name


class AdapterNamespace(Protocol):
    """One tenant's store of adapters, by name."""

    def describe(self) -> str:
        """Credential-free description of the store (logs, registry entries)."""
        ...

    def lookup(self, name: str) -> AdapterSource | None:
        """The adapter ``name`` if the store holds it, else None (blocking: store I/O).

        Raises ``SourceUnavailableError`` when the store cannot be read.
        """
        ...


class FolderNamespace:
    """``<path>/<name>/``: a folder on this machine (a mounted volume, a synced copy)."""

    def __init__(self, path: Path, allowed_roots: Iterable[Path]) -> None:
        resolved = path.resolve()
        if not any(resolved.is_relative_to(Path(r).resolve()) for r in allowed_roots):
            raise SourceNotAllowedError(
                f"The adapter folder {str(path)!r} is outside registry.allowed_roots."
            )
        self.root = resolved

    def describe(self) -> str:
        return f"folder:{self.root}"

    def lookup(self, name: str) -> AdapterSource | None:
        folder = self.root / name
        # The namespace's root is the only allowed root: links out of it are refused.
        if folder.is_dir():
            return LocalEntry(name, LocalDirectorySource(folder, [self.root]), [str(self.root)])
        archive = self.root / f"{name}{ARCHIVE_SUFFIX}"
        if archive.is_file():
            inner = FsspecSource(
                str(archive), allowed_protocols={"file"}, allowed_roots=[self.root]
            )
            return LocalEntry(name, inner, [str(self.root)])
        return None


class LocalEntry:
    """An adapter of a namespace on this machine's disk (a folder, a ``file://`` URI),
    whose refusals reach the tenant that asked for it by name.

    The tenant sees the name it asked for, never the gateway's paths: a link out of the
    root gets a fixed message, any other refusal has the root (and the registry's work
    folder) replaced by ``<source>``. The operator's log keeps the full message.
    """

    def __init__(self, name: str, inner: AdapterSource, roots: Iterable[str]) -> None:
        self.name = name
        self.inner = inner
        self.roots = sorted({r for root in roots for r in _spellings(root)}, key=len, reverse=True)

    def describe(self) -> str:
        return self.inner.describe()

    def materialize(self, workdir: Path, limits: AdapterLimits) -> Path:
        try:
            return self.inner.materialize(workdir, limits)
        except AdapterError as exc:
            logger.info("adapter %r of %s refused: %s", self.name, self.describe(), exc.message)
            message = self._tenant_message(exc, workdir)
            raise type(exc)(message, code=exc.code, param=exc.param) from None

    def _tenant_message(self, exc: AdapterError, workdir: Path) -> str:
        if isinstance(exc, SourceNotAllowedError):
            return f"The adapter {self.name!r} links outside this tenant's adapter source."
        message = exc.message
        for path in [*self.roots, *_spellings(str(workdir))]:
            message = message.replace(path, SOURCE_LABEL)
        return message


def _spellings(path: str) -> list[str]:
    """``path`` as messages may quote it: as given, resolved, and as a ``file://`` URI."""
    plain = path.split("://", 1)[1] if "://" in path else path
    plain = plain.rstrip("/") or "/"
    resolved = str(Path(plain).resolve())
    return [f"file://{p}" for p in (plain, resolved)] + [plain, resolved]


class UriNamespace:
    """``<uri>/<name>``: any fsspec store the registry may register from."""

    def __init__(
        self,
        uri: str,
        *,
        allowed_protocols: Iterable[str] = DEFAULT_PROTOCOLS,
        allowed_roots: Iterable[Path] = (),
        allow_internal_hosts: bool = False,
    ) -> None:
        self.uri = uri.rstrip("/")
        self._options: dict[str, Any] = {
            "allowed_protocols": frozenset(allowed_protocols),
            "allowed_roots": list(allowed_roots),
            "allow_internal_hosts": allow_internal_hosts,
        }

    def describe(self) -> str:
        return f"uri:{self.uri}"

    def lookup(self, name: str) -> AdapterSource | None:
        for path in (name, f"{name}{ARCHIVE_SUFFIX}"):
            source = FsspecSource(f"{self.uri}/{path}", **self._options)
            if source.exists():
                return source
        return None


class S3Namespace:
    """``s3://<bucket>/<prefix><name>/``, on AWS or any S3-compatible server.

    One ``ListObjectsV2`` per lookup tells whether the name is held and which files it
    has; ``materialize`` then reads each file once (``GetObject``), within the limits.
    The boto3 client is made once and shared by every thread (boto3 clients are).
    """

    def __init__(self, spec: AdapterSourceSpec, environ: Mapping[str, str] = os.environ) -> None:
        try:
            import boto3
            from botocore.config import Config
        except ImportError:  # pragma: no cover - depends on the install
            raise SourceUnavailableError(
                "S3 adapter sources need boto3 on the gateway (pip install 'loragate[s3]')."
            ) from None
        assert spec.bucket is not None
        self.bucket = spec.bucket
        self.prefix = spec.prefix
        self.endpoint = spec.endpoint
        credentials: dict[str, str] = {}
        if spec.access_key_env is not None and spec.secret_key_env is not None:
            missing = [n for n in (spec.access_key_env, spec.secret_key_env) if n not in environ]
            if missing:
                raise SourceUnavailableError(
                    f"The environment variables {missing} named by the adapter source are not set."
                )
            credentials = {
                "aws_access_key_id": environ[spec.access_key_env],
                "aws_secret_access_key": environ[spec.secret_key_env],
            }
        self._client = boto3.session.Session().client(
            "s3",
            endpoint_url=spec.endpoint,
            region_name=spec.region or "us-east-1",
            config=Config(retries={"max_attempts": 2}, connect_timeout=5, read_timeout=30),
            **credentials,
        )

    def describe(self) -> str:
        where = f" at {self.endpoint}" if self.endpoint else ""
        return f"s3://{self.bucket}/{self.prefix}{where}"

    def lookup(self, name: str) -> AdapterSource | None:
        folder = f"{self.prefix}{name}/"
        listing = self._list(folder, 1000)
        objects = [(o["Key"], int(o["Size"])) for o in listing.get("Contents", [])]
        if objects:
            return S3AdapterSource(self, name, folder, objects, truncated=listing["IsTruncated"])
        key = f"{self.prefix}{name}{ARCHIVE_SUFFIX}"
        found = [o for o in self._list(key, 1).get("Contents", []) if o["Key"] == key]
        if not found:
            return None
        return S3ArchiveSource(self, key, int(found[0]["Size"]))

    def _list(self, prefix: str, max_keys: int) -> Any:
        """One ``ListObjectsV2`` page of the keys starting with ``prefix``."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return self._client.list_objects_v2(Bucket=self.bucket, Prefix=prefix, MaxKeys=max_keys)
        except (BotoCoreError, ClientError) as exc:
            raise SourceUnavailableError(f"Cannot list {self.describe()}: {exc}") from None

    def read(self, key: str) -> Any:
        """The body stream of one object (``GetObject``)."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return self._client.get_object(Bucket=self.bucket, Key=key)["Body"]
        except (BotoCoreError, ClientError) as exc:
            raise SourceUnavailableError(f"Cannot read {self.describe()}: {exc}") from None


class S3AdapterSource:
    """The files of one adapter folder in an S3 namespace, as listed by ``lookup``."""

    def __init__(
        self,
        namespace: S3Namespace,
        name: str,
        folder: str,
        objects: list[tuple[str, int]],
        *,
        truncated: bool,
    ) -> None:
        self.namespace = namespace
        self.name = name
        self.folder = folder
        self.objects = objects
        self.truncated = truncated

    def describe(self) -> str:
        return f"s3://{self.namespace.bucket}/{self.folder}"

    def materialize(self, workdir: Path, limits: AdapterLimits) -> Path:
        if self.truncated or len(self.objects) > limits.max_files:
            raise UnsafeArchiveError(
                f"{self.describe()} holds more than {limits.max_files} files.",
                code="source_too_many_files",
                param="source",
            )
        dest = workdir / "download"
        dest.mkdir()
        total = 0
        for key, size in sorted(self.objects):
            relative = safe_relative_path(key[len(self.folder) :])
            budget = min(limits.max_weights_bytes, limits.max_total_bytes - total)
            if size > budget:  # refused from the listing, before any byte is read
                raise UnsafeArchiveError(
                    f"{self.describe()}{relative} is larger than {budget} bytes.",
                    code="source_too_large",
                    param="source",
                )
            target = dest.joinpath(*relative.parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            body = self.namespace.read(key)
            try:
                total += copy_bounded(body, target, budget, f"{self.describe()}{relative}")
            finally:
                body.close()
        return dest


class S3ArchiveSource:
    """``<name>.tar.gz`` in an S3 namespace: read once (its listed size checked first),
    then unpacked and bounded as an uploaded archive is."""

    def __init__(self, namespace: S3Namespace, key: str, size: int) -> None:
        self.namespace = namespace
        self.key = key
        self.size = size

    def describe(self) -> str:
        return f"s3://{self.namespace.bucket}/{self.key}"

    def materialize(self, workdir: Path, limits: AdapterLimits) -> Path:
        if self.size > limits.max_archive_bytes:  # from the listing, before any byte is read
            raise UnsafeArchiveError(
                f"{self.describe()} is larger than {limits.max_archive_bytes} bytes.",
                code="archive_too_large",
                param="source",
            )
        archive = workdir / "archive"
        body = self.namespace.read(self.key)
        try:
            copy_bounded(body, archive, limits.max_archive_bytes, self.describe())
        finally:
            body.close()
        unpacked = workdir / "unpacked"
        unpacked.mkdir()
        return extract_archive(archive, unpacked, limits)


def open_namespace(
    spec: AdapterSourceSpec,
    *,
    allowed_roots: Iterable[Path] = (),
    allowed_protocols: Iterable[str] = DEFAULT_PROTOCOLS,
    allow_internal_hosts: bool = False,
    environ: Mapping[str, str] = os.environ,
) -> AdapterNamespace:
    """The namespace ``spec`` describes, under the registry's own source rules (a folder
    under ``allowed_roots``, a URI of ``allowed_protocols``). Raises ``AdapterRequestError``
    subclasses when the spec is not allowed or cannot be opened."""
    if spec.kind is SourceKind.S3:
        return S3Namespace(spec, environ)
    if spec.kind is SourceKind.FOLDER:
        assert spec.path is not None
        return FolderNamespace(spec.path, allowed_roots)
    assert spec.uri is not None
    protocol, sep, path = spec.uri.partition("://")
    if not sep:
        protocol, path = "file", spec.uri
    if protocol in LOCAL_PROTOCOLS and protocol in frozenset(allowed_protocols):
        # A folder on this machine, with a folder's rules: its own root is the only root
        # its adapters may link into (not every allowed root: another tenant's is one).
        return FolderNamespace(Path(path), allowed_roots)
    return UriNamespace(
        spec.uri,
        allowed_protocols=allowed_protocols,
        allowed_roots=allowed_roots,
        allow_internal_hosts=allow_internal_hosts,
    )

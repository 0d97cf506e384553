"""Tenants' adapter namespaces (``adapters.namespace_sources``) against a real S3 server
(moto on loopback), a folder and a ``file://`` URI: lookups, what is read, refusals."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from pydantic import ValidationError

from adapters.errors import SourceNotAllowedError, UnsafeArchiveError
from adapters.limits import AdapterLimits
from adapters.namespace_sources import (
    AdapterSourceSpec,
    S3Namespace,
    is_namespace_name,
    open_namespace,
)
from tests.support.modelkit import fingerprint, tiny_llama_dir, write_random_adapter
from tests.support.s3_server import ACCESS_KEY_ENV, BUCKET, SECRET_KEY_ENV, S3Server


def s3_spec(server: S3Server, prefix: str) -> AdapterSourceSpec:
    return AdapterSourceSpec(
        kind="s3",
        bucket=BUCKET,
        prefix=prefix,
        endpoint=server.endpoint,
        access_key_env=ACCESS_KEY_ENV,
        secret_key_env=SECRET_KEY_ENV,
    )


@pytest.fixture(scope="module")
def adapter_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_random_adapter(tiny_llama_dir(), tmp_path_factory.mktemp("ns") / "a", seed=3)


@pytest.mark.parametrize(
    "name",
    ["..", "../x", "a/b", "/etc", "a..b", "s3://b/k", "file:x", "A", "", "x" * 65, "a\\b", ".a"],
)
def test_names_that_are_not_one_plain_component_are_refused(name: str) -> None:
    assert not is_namespace_name(name)


def test_plain_names_are_accepted() -> None:
    assert all(is_namespace_name(n) for n in ("support", "a.b", "v2_x-1", "0"))


@pytest.mark.parametrize(
    ("fields", "fragment"),
    [
        ({"kind": "s3"}, "needs 'bucket'"),
        ({"kind": "s3", "bucket": "bkt", "prefix": "x"}, "prefix"),
        ({"kind": "s3", "bucket": "bkt", "prefix": "../x/"}, "prefix"),
        ({"kind": "s3", "bucket": "bkt", "access_key_env": "lower"}, "access_key_env"),
        ({"kind": "s3", "bucket": "bkt", "access_key_env": "A"}, "both"),
        ({"kind": "s3", "bucket": "bkt", "endpoint": "http://u:p@host"}, "endpoint"),
        ({"kind": "s3", "bucket": "bkt", "path": "/x"}, "do not apply"),
        ({"kind": "folder"}, "needs 'path'"),
        ({"kind": "uri", "uri": "s3://user:secret@b/x"}, "credentials"),
        ({"kind": "uri", "uri": "https://h/x?token=1"}, "credentials"),
        ({"kind": "s3", "bucket": "bkt", "secret_key": "x"}, "Extra inputs"),
    ],
)
def test_spec_refusals(fields: dict[str, object], fragment: str) -> None:
    with pytest.raises(ValidationError, match=fragment):
        AdapterSourceSpec.model_validate(fields)


def test_s3_lookup_lists_once_and_materialize_reads_each_file_once(
    s3_server: S3Server, adapter_dir: Path, tmp_path: Path
) -> None:
    prefix = f"lib-{uuid.uuid4().hex[:8]}/"
    s3_server.put_folder(adapter_dir, f"{prefix}tone/")
    namespace = open_namespace(s3_spec(s3_server, prefix))
    assert namespace.lookup("missing") is None
    source = namespace.lookup("tone")
    assert source is not None
    assert source.describe() == f"s3://{BUCKET}/{prefix}tone/"
    work = tmp_path / "work"
    work.mkdir()
    copied = source.materialize(work, AdapterLimits())
    assert fingerprint(copied) == fingerprint(adapter_dir)
    reads = s3_server.reads(f"{prefix}tone/")
    assert [c.method for c in reads].count("GET") == 3  # one list, two objects
    assert sum(1 for c in reads if c.prefix == f"{prefix}tone/") == 1


def test_s3_limits_are_enforced_from_the_listing(
    s3_server: S3Server, adapter_dir: Path, tmp_path: Path
) -> None:
    prefix = f"lib-{uuid.uuid4().hex[:8]}/"
    s3_server.put_folder(adapter_dir, f"{prefix}big/")
    source = open_namespace(s3_spec(s3_server, prefix)).lookup("big")
    assert source is not None
    with pytest.raises(UnsafeArchiveError) as too_big:
        source.materialize(tmp_path, AdapterLimits(max_weights_bytes=1000))
    assert too_big.value.code == "source_too_large"
    with pytest.raises(UnsafeArchiveError) as too_many:
        source.materialize(tmp_path, AdapterLimits(max_files=1))
    assert too_many.value.code == "source_too_many_files"
    assert not any(c.path.endswith(".safetensors") for c in s3_server.reads(f"{prefix}big/"))


def test_s3_credentials_come_from_the_named_variables_only(s3_server: S3Server) -> None:
    spec = s3_spec(s3_server, "x/")
    with pytest.raises(Exception, match="not set"):
        S3Namespace(spec, environ={})
    namespace = S3Namespace(
        spec, environ={ACCESS_KEY_ENV: "AKID-1234", SECRET_KEY_ENV: "s3cr3t-5678"}
    )
    shown = spec.model_dump_json() + namespace.describe()
    assert "AKID-1234" not in shown and "s3cr3t-5678" not in shown


def test_folder_namespace_stays_inside_allowed_roots(adapter_dir: Path, tmp_path: Path) -> None:
    root = tmp_path / "tenant"
    root.mkdir()
    (root / "tone").symlink_to(adapter_dir, target_is_directory=True)
    spec = AdapterSourceSpec(kind="folder", path=root)
    with pytest.raises(SourceNotAllowedError):
        open_namespace(spec, allowed_roots=[tmp_path / "elsewhere"])
    namespace = open_namespace(spec, allowed_roots=[tmp_path])
    assert namespace.lookup("nothing") is None
    source = namespace.lookup("tone")
    assert source is not None
    with pytest.raises(SourceNotAllowedError):  # the link leaves the namespace's folder
        source.materialize(tmp_path, AdapterLimits())


def test_uri_namespace_asks_the_store_whether_it_holds_a_name(
    adapter_dir: Path, tmp_path: Path
) -> None:
    spec = AdapterSourceSpec(kind="uri", uri=f"file://{adapter_dir.parent}")
    namespace = open_namespace(
        spec, allowed_roots=[tmp_path, adapter_dir.parent], allowed_protocols={"file"}
    )
    assert namespace.lookup("absent") is None
    assert namespace.lookup(adapter_dir.name) is not None
    with pytest.raises(SourceNotAllowedError):
        open_namespace(spec).lookup(adapter_dir.name)  # file:// is not allowed by default

"""Building and checking bundle directories on disk.

``package`` converts a trained model, proves the ONNX graph answers like the
original, writes test vectors and the manifest, and signs every file.
``verify_bundle`` checks a bundle directory against its signature.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from packager._io.hashing import FileHasher, digest_file, digest_files
from packager.build.options import PackageOptions, Provenance
from packager.build.provenance import (
    PROVENANCE_FILE,
    SBOM_FILE,
    BuildFacts,
    cyclonedx_bom,
    slsa_statement,
)
from packager.core.compat import minimum_runtime
from packager.core.digests import Digest
from packager.core.graph import check_graph
from packager.core.manifest import (
    MANIFEST,
    SIGNATURE,
    FileEntry,
    Manifest,
    ModelInfo,
    ProvenanceRecord,
    RuntimeRequirement,
    Source,
    TrainingData,
    Validation,
    check_name,
    check_version,
    parse_manifest,
)
from packager.core.shards import Shard, bounds, choose_shard_size
from packager.core.spdx import check_expression
from packager.core.text import Progress
from packager.errors import UsageError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ec import (
        EllipticCurvePrivateKey,
    )

    from packager._io.table import Table
    from packager.build.convert import Conversion


MODEL_FILE = "model.onnx"
TESTVECTORS_FILE = "testvectors.npz"
README_FILE = "README.md"


def source_date_epoch() -> int | None:
    """``$SOURCE_DATE_EPOCH`` as an int, None when unset.

    Raises:
        UsageError: it is set but not a non-negative integer.
    """
    value = os.environ.get("SOURCE_DATE_EPOCH")
    if value is None or value == "":
        return None
    if not value.isdigit():
        raise UsageError(f"SOURCE_DATE_EPOCH={value!r} is not a Unix time in seconds")
    return int(value)


def git_head(cwd: Path) -> str | None:
    """HEAD of the git repository around ``cwd``, or None outside one (or without git)."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--verify", "HEAD"],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    commit = out.stdout.strip()
    return commit if out.returncode == 0 and len(commit) in (40, 64) else None


def bundle_dir_name(name: str, version: str) -> str:
    return f"{name}-{version}"


def check_destination(out_dir: Path, name: str, version: str, *, overwrite: bool) -> Path:
    """The bundle directory ``package`` writes; without ``overwrite``, it must not exist.

    Raises:
        UsageError: it exists (or is a link) and ``overwrite`` is false.
    """
    final = out_dir / bundle_dir_name(name, version)
    if not overwrite and (final.exists() or final.is_symlink()):
        raise UsageError(
            f"{final} already exists; pass --force to replace it (in Python: "
            "PackageOptions(overwrite=True)), or choose another -o directory or version"
        )
    return final


def package(
    model: Any,
    *,
    sample: Table,
    name: str,
    version: str,
    key: EllipticCurvePrivateKey,
    out_dir: Path,
    options: PackageOptions | None = None,
    progress: Progress | None = None,
    certificate_chain: Sequence[bytes] = (),
) -> Path:
    """Convert, validate, write and sign a bundle; returns its directory.

    ``model`` is a fitted estimator, a PyTorch module, an ``onnx.ModelProto``,
    or what :func:`packager.build.convert.load_model_file` returned;
    ``options.conversion`` and ``options.validation`` go to
    :func:`packager.build.convert.convert`. ``options.quantize`` quantizes the
    graph and keeps it only if it still matches the original within its
    tolerance (default: the parity tolerances); the size change goes to the
    manifest's ``metrics.quantization``. ``options.benchmark`` measures the
    final model on labelled data into ``metrics.benchmark``. ``progress``
    receives notes for the user. ``certificate_chain`` (DER, leaf first, the leaf
    certifying ``key``) goes into model.sig, as ``model_signing sign certificate``
    writes it. The bundle is built in a temporary directory
    beside its destination and renamed into place, so a failure leaves no
    partial bundle; an existing bundle directory is replaced in one rename only with
    ``options.overwrite``.

    Raises:
        UsageError: bad name, version, sample or options; the bundle directory exists
            (without ``options.overwrite``).
        ConversionError: the model cannot be converted (or quantized), or a
            library it needs is missing (the message names the extra).
        ParityError: ONNX answers differ from the original beyond tolerance,
            before or after quantization.
    """
    from packager.build.convert import Options, convert
    from packager.core import signature

    options = options or PackageOptions()
    say = progress or (lambda _message: None)
    check_name(name)
    check_version(version)
    final = check_destination(out_dir, name, version, overwrite=options.overwrite)
    conversion = convert(model, sample, Options.of(options.conversion, options.validation))
    for note in conversion.notes:
        say(note)
    metrics: dict[str, Any] = {}
    if options.quantize is not None:
        from packager.build.quantize import quantize

        tolerance = options.quantize.tolerance
        conversion, quantization = quantize(
            conversion, method=options.quantize.method, rtol=tolerance.rtol, atol=tolerance.atol
        )
        say(quantization.describe())
        metrics["quantization"] = quantization.to_json()
    benchmark = options.benchmark
    if benchmark is not None:
        from packager.build.benchmark import benchmark_conversion

        report = benchmark_conversion(conversion, benchmark)
        say(report.table())
        metrics["benchmark"] = report.to_json()
    out_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=out_dir))
    try:
        resources = _write_bundle(
            work, conversion, name=name, version=version, options=options, metrics=metrics
        )
        shard_size, shards = shard_digests(work, resources, options.shard_size)
        sig = signature.sign(
            subject_name=final.name,
            resources=resources,
            private_key=key,
            certificate_chain=certificate_chain,
            shard_size=shard_size,
            shards=shards,
        )
        (work / SIGNATURE).write_bytes(sig)
        if final.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{final.name}.old.", dir=out_dir))
            os.rename(final, old / final.name)
            os.rename(work, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(work, final)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return final


def shard_digests(
    bundle: Path, resources: Mapping[str, Digest], requested: int | None
) -> tuple[int | None, dict[str, tuple[Shard, ...]] | None]:
    """The shard size to sign the files ``resources`` names in ``bundle`` with (see
    :func:`~packager.core.shards.choose_shard_size`; ``requested`` None: chosen from their
    sizes) and every file's shards, hashed on every core; (None, None): whole files.

    Raises:
        UsageError: ``requested`` is not a valid shard size.
        OSError: a file cannot be read.
    """
    paths = {path: bundle / path for path in resources}
    shard_size = choose_shard_size((p.stat().st_size for p in paths.values()), requested)
    if shard_size is None:
        return None, None
    with FileHasher(paths.values(), shard_size=shard_size) as hasher:
        found = hasher.all_hashed()
    shards = {}
    for path, source in paths.items():
        hashed = found[source]
        cut = bounds(hashed.size, shard_size)
        shards[path] = tuple(
            Shard(start, end, digest)
            for (start, end), digest in zip(cut, hashed.digests, strict=True)
        )
    return shard_size, shards


def _write_bundle(
    work: Path,
    conversion: Conversion,
    *,
    name: str,
    version: str,
    options: PackageOptions,
    metrics: Mapping[str, Any],
) -> dict[str, Digest]:
    """Write every file of the bundle but model.sig (the manifest describes the model as
    ``options.metadata`` and ``options.provenance`` say); return what model.sig signs."""
    from packager._io.testvectors import write_testvectors
    from packager.build.convert.onnxfile import save_onnx
    from packager.runtime import runtime_version

    epoch = source_date_epoch()
    created = datetime.fromtimestamp(epoch if epoch is not None else int(time.time()), UTC)
    work.chmod(0o755)
    data_files = save_onnx(
        conversion.model, work, MODEL_FILE, external_data=conversion.external_data
    )
    write_testvectors(
        work / TESTVECTORS_FILE,
        inputs=conversion.feeds,
        outputs=conversion.expected,
        epoch=int(created.timestamp()),
    )
    roles = {MODEL_FILE: "model", TESTVECTORS_FILE: "testvectors"}
    roles.update({path: "weights" for path in data_files})
    metadata = options.metadata
    readme = metadata.readme
    if readme is not None:
        try:
            shutil.copyfile(readme, work / README_FILE)
        except OSError as e:
            raise UsageError(f"cannot read --readme {readme}: {e.strerror}") from e
        roles[README_FILE] = "doc"

    license = check_expression(metadata.license) if metadata.license else None
    record = _provenance_record(options.provenance)
    model_files = {path: roles[path] for path in (MODEL_FILE, TESTVECTORS_FILE, *data_files)}
    described = _describe(work, model_files)
    facts = BuildFacts(
        name=name,
        version=version,
        created=created,
        files={entry.path: entry.digest for entry in described},
        model_file=MODEL_FILE,
        source=Source.from_dict(conversion.source),
        onnxruntime=runtime_version(),
        task=conversion.task,
        inputs=conversion.inputs,
        outputs=conversion.outputs,
        parity=_parity(conversion),
        metrics=metrics,
        license=license,
        description=metadata.description or None,
        record=record,
        parameters=_external_parameters(name, version, license, options),
    )
    (work / PROVENANCE_FILE).write_bytes(slsa_statement(facts, environ=os.environ))
    (work / SBOM_FILE).write_bytes(cyclonedx_bom(facts))
    roles.update({PROVENANCE_FILE: "doc", SBOM_FILE: "doc"})
    files = tuple(
        sorted(
            [
                *described,
                *_describe(work, {p: r for p, r in roles.items() if p not in model_files}),
            ],
            key=lambda entry: entry.path,
        )
    )
    ir_version = int(conversion.model.ir_version)
    opsets: dict[str, int] = {}
    for opset in conversion.model.opset_import:
        domain = opset.domain or "ai.onnx"
        opsets[domain] = max(opsets.get(domain, 0), int(opset.version))
    onnxruntime = minimum_runtime(opsets, ir_version=ir_version, validated_with=runtime_version())
    manifest = Manifest(
        name=name,
        version=version,
        created=created.strftime("%Y-%m-%dT%H:%M:%SZ"),
        model=ModelInfo(
            path=MODEL_FILE,
            ir_version=ir_version,
            opsets=opsets,
            inputs=tuple(conversion.inputs),
            outputs=tuple(conversion.outputs),
            source=Source.from_dict(conversion.source),
            accepts_missing=conversion.accepts_missing,
            target=metadata.target or None,
        ),
        runtime=RuntimeRequirement(onnxruntime),
        files=files,
        validation=_validation(conversion),
        description=metadata.description or None,
        license=license,
        labels=dict(metadata.labels) if metadata.labels else None,
        metrics=dict(metrics) if metrics else None,
        provenance=record,
    )
    manifest_bytes = manifest.to_bytes()
    # The instance will check the graph against the manifest before loading it:
    # a bundle that would fail there is not written.
    check_graph((work / MODEL_FILE).read_bytes(), parse_manifest(manifest_bytes))
    (work / MANIFEST).write_bytes(manifest_bytes)

    resources = {f.path: f.digest for f in files}
    resources[MANIFEST] = Digest.of(manifest_bytes)
    return resources


def _describe(work: Path, roles: Mapping[str, str]) -> list[FileEntry]:
    paths = sorted(roles)
    return [
        FileEntry(path, digest, size, roles[path])
        for path, (digest, size) in zip(
            paths, digest_files(work / path for path in paths), strict=True
        )
    ]


def _parity(conversion: Conversion) -> dict[str, float | int | None]:
    comparison = conversion.comparison
    return {
        "rows": comparison.rows,
        "maxAbsDiff": comparison.max_abs_diff,
        "maxRelDiff": comparison.max_rel_diff,
        "labelAgreement": comparison.label_agreement,
        "rtol": conversion.rtol,
        "atol": conversion.atol,
    }


def _external_parameters(
    name: str, version: str, license: str | None, options: PackageOptions
) -> dict[str, Any]:
    """The package command's options that shaped the bundle, as SLSA external parameters."""
    provenance = options.provenance
    parameters: dict[str, Any] = {
        "name": name,
        "version": version,
        "validation": {"rtol": options.validation.rtol, "atol": options.validation.atol},
        "quantize": None if options.quantize is None else options.quantize.method,
        "trainingData": [path.name for path in provenance.training_data],
        "hyperparameters": dict(provenance.hyperparameters),
        "benchmark": options.benchmark is not None,
    }
    if license is not None:
        parameters["license"] = license
    if provenance.git_commit:
        parameters["gitCommit"] = provenance.git_commit
    return parameters


def _validation(conversion: Conversion) -> Validation:
    comparison = conversion.comparison
    return Validation(
        testvectors=TESTVECTORS_FILE,
        rows=comparison.rows,
        rtol=conversion.rtol,
        atol=conversion.atol,
        max_abs_diff=comparison.max_abs_diff,
        max_rel_diff=comparison.max_rel_diff,
        label_agreement=comparison.label_agreement,
        task=conversion.task,
        reference=conversion.reference,
        label_outputs=tuple(conversion.label_outputs) or None,
        input_cast=conversion.input_cast or None,
    )


def _provenance_record(provenance: Provenance) -> ProvenanceRecord | None:
    """What the manifest records of ``provenance``; None when there is nothing to record."""
    training: list[TrainingData] = []
    licenses = dict(provenance.training_data_licenses)
    for path in provenance.training_data:
        try:
            digest, _ = digest_file(path)
        except OSError as e:
            raise UsageError(f"cannot read --training-data {path}: {e.strerror}") from e
        license = licenses.pop(path.name, None)
        training.append(
            TrainingData(path.name, digest, None if license is None else check_expression(license))
        )
    if licenses:
        raise UsageError(
            f"--training-data-license names {sorted(licenses)[0]!r}, which is not the name of "
            "a --training-data file"
        )
    record = ProvenanceRecord(
        git_commit=provenance.git_commit or None,
        training_data=tuple(training) or None,
        hyperparameters=dict(provenance.hyperparameters) or None,
        built_by=provenance.built_by or None,
    )
    return record if record != ProvenanceRecord() else None

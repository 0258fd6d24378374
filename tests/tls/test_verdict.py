"""The firmware policy, sans I/O: errors + name check + profile -> verdict."""

from __future__ import annotations

import pytest

from phone_sim.errors import RemoteError
from phone_sim.firmware import FIRMWARE_CLASSES, profile_for
from phone_sim.tls.flags import CertVerifyFlag
from phone_sim.tls.names import NameCheck
from phone_sim.tls.pki import CertKind, TestPki
from phone_sim.tls.verdict import CertSummary, TlsRefused, VerifyError, decide, failed_verdict


def _err(name: str | None) -> VerifyError:
    return VerifyError(code=0, name=name, message="m", depth=0, subject="CN=x")


def _name(matched: bool) -> NameCheck:
    return NameCheck(
        server_name="pbx",
        matched=matched,
        matched_by="DNS:pbx" if matched else None,
        identities=("DNS:pbx",),
        wildcard_refused=False,
    )


@pytest.mark.parametrize("fclass", FIRMWARE_CLASSES, ids=lambda c: c.id)
def test_policy_per_class(fclass: object, pki: TestPki) -> None:
    profile = fclass.profile  # type: ignore[attr-defined]
    certs = [pki.credentials[CertKind.GOOD].leaf]
    clean = decide(
        profile,
        server_name="pbx",
        errors=[],
        name_check=_name(True),
        tls_version="TLSv1.2",
        cipher="c",
        certificates=certs,
    )
    dirty = decide(
        profile,
        server_name="pbx",
        errors=[_err("CERT_HAS_EXPIRED")],
        name_check=_name(False),
        tls_version="TLSv1.2",
        cipher="c",
        certificates=certs,
    )
    assert dirty.bitmask == CertVerifyFlag.EVALIDITY_PERIOD | CertVerifyFlag.EIDENTITY_NOT_MATCH
    assert clean.enforced is dirty.enforced is profile.validates_server
    if not profile.tls_supported:
        assert not clean.connects and not dirty.connects
    elif profile.validates_server:
        assert clean.connects and not dirty.connects
        assert dirty.reason is not None and "refuses" in dirty.reason
    else:
        assert clean.connects and dirty.connects
        assert dirty.reason is not None and "would show 0x40000004" in dirty.reason


def test_unmapped_error_is_eunknown() -> None:
    v = decide(
        profile_for("D65"),
        server_name="pbx",
        errors=[_err("CA_MD_TOO_WEAK"), _err(None)],
        name_check=_name(True),
        tls_version="TLSv1.2",
        cipher="c",
    )
    assert v.bitmask == CertVerifyFlag.EUNKNOWN and v.flags == ["EUNKNOWN"]
    assert not v.connects


def test_json_has_the_contract_fields(pki: TestPki) -> None:
    v = decide(
        profile_for("D65", "2_9_2"),
        server_name="pbx",
        errors=[_err("UNABLE_TO_GET_ISSUER_CERT_LOCALLY"), _err("UNABLE_TO_VERIFY_LEAF_SIGNATURE")],
        name_check=_name(False),
        tls_version="TLSv1.2",
        cipher="ECDHE-ECDSA-AES256-GCM-SHA384",
        certificates=[pki.credentials[CertKind.GOOD].leaf],
    )
    obj = v.to_json()
    for key in (
        "verdict",
        "bitmask",
        "flags",
        "enforced",
        "tls_version",
        "cipher",
        "openssl_version",
    ):
        assert key in obj
    assert obj["verdict"] == "fail" and obj["bitmask"] == 0x40000022
    assert obj["bitmask_hex"] == "0x40000022"
    assert obj["flags"] == ["EUNTRUSTED", "EISSUER_MISMATCH", "EIDENTITY_NOT_MATCH"]
    assert [c["flag"] for c in obj["causes"]] == obj["flags"]
    assert obj["chain"][0]["sans"] == ["DNS:pbx.phone-sim.test", "URI:sip:pbx.phone-sim.test"]
    assert obj["tls_allow_wildcard_certs"] == "0"


def test_refused_carries_bitmask_and_is_remote() -> None:
    v = decide(
        profile_for("D80"),
        server_name="pbx",
        errors=[_err("CERT_REVOKED")],
        name_check=_name(True),
        tls_version="TLSv1.2",
        cipher="c",
    )
    err = TlsRefused(v)
    assert isinstance(err, RemoteError) and err.exit_code == 1
    assert err.bitmask == CertVerifyFlag.EREVOKED and err.verdict is v
    assert "0x00000080 EREVOKED" in str(err)


def test_failed_verdict() -> None:
    v = failed_verdict(profile_for("D65"), server_name="pbx", reason="TLS version mismatch")
    assert v.verdict == "fail" and v.bitmask == 0 and v.tls_version is None
    assert v.to_json()["reason"] == "TLS version mismatch"


def test_cert_summary(pki: TestPki) -> None:
    s = CertSummary.from_certificate(pki.credentials[CertKind.SHA1_SIGNED].leaf)
    assert s.signature_hash == "sha1" and s.subject.startswith("CN=pbx.phone-sim.test")
    assert s.not_before < s.not_after


def test_repr_does_not_dump_certificates(pki: TestPki) -> None:
    v = decide(
        profile_for("D65"),
        server_name="pbx",
        errors=[],
        name_check=_name(True),
        tls_version="TLSv1.2",
        cipher="c",
        certificates=[pki.credentials[CertKind.GOOD].leaf],
    )
    assert "certificates=" not in repr(v)


def _name_check(
    pki: TestPki, kind: CertKind, server: str, profile_allow: bool = False
) -> NameCheck:
    from phone_sim.tls.names import check_server_name

    return check_server_name(pki.credentials[kind].leaf, server, allow_wildcard=profile_allow)


def test_explain_names_the_configured_name_and_the_certificate_names(pki: TestPki) -> None:
    v = decide(
        profile_for("D65"),
        server_name="pbx.phone-sim.test",
        errors=[],
        name_check=_name_check(pki, CertKind.OTHER_HOST, "pbx.phone-sim.test"),
        tls_version="TLSv1.2",
        cipher="c",
    )
    ((flag, info),) = v.explain()
    assert flag is CertVerifyFlag.EIDENTITY_NOT_MATCH
    assert (
        "configured with pbx.phone-sim.test" in info.cause
        and "DNS:other.phone-sim.test" in info.cause
    )
    assert "subjectAltName DNS:pbx.phone-sim.test" in info.fix
    by_ip = decide(
        profile_for("D65"),
        server_name="192.0.2.1",
        errors=[],
        name_check=_name_check(pki, CertKind.GOOD, "192.0.2.1"),
        tls_version="TLSv1.2",
        cipher="c",
    )
    assert "subjectAltName IP:192.0.2.1" in by_ip.explain()[0][1].fix


@pytest.mark.parametrize(
    ("model", "fw", "fix"),
    [
        ("D65", "2_9_22", "set tls_allow_wildcard_certs=1 on this phone"),
        ("D65", "2_9_0", "upgrade to firmware >= 2_9_2"),
        ("D80", "1_12_0", "upgrade to firmware >= 1_12_1"),
    ],
)
def test_explain_wildcard(pki: TestPki, model: str, fw: str, fix: str) -> None:
    v = decide(
        profile_for(model, fw),
        server_name="pbx.phone-sim.test",
        errors=[],
        name_check=_name_check(pki, CertKind.WILDCARD_SAN, "pbx.phone-sim.test"),
        tls_version="TLSv1.2",
        cipher="c",
    )
    ((_, info),) = v.explain()
    assert "RFC 5922 §7.2" in info.cause and fix in info.fix


def test_explain_validity_names_the_certificate() -> None:
    err = VerifyError(
        code=10,
        name="CERT_HAS_EXPIRED",
        message="certificate has expired",
        depth=1,
        subject="CN=inter",
    )
    v = decide(
        profile_for("D65"),
        server_name="pbx",
        errors=[err],
        name_check=_name(True),
        tls_version="TLSv1.2",
        cipher="c",
    )
    ((_, info),) = v.explain()
    assert info.cause == "certificate has expired at depth 1 (CN=inter), by the phone's clock"

"""Department seals: the key pair, its certificate from the city CA, the seal image, signing and checking.

Each department of a node has one seal, kept in its own directory (``<seals dir>/<department>/``):

- ``seal.key``  the private key (EC P-256, PKCS#8 PEM, mode 0600). It never leaves this directory: it
  is never serialised into a document, an event or a log; documents carry the certificate only.
- ``seal.pem``  the department certificate issued by the city CA (``urn:tongban:dept:<node>:<dept>``).
- ``seal.png``  the seal image: a red round seal, the department name on the ring and a star.
- ``seal.der``  the GB/T 38540 ``SESeal`` (seal info + image + certificate list, signed).

The seal is made by the department's own certified key (GB/T 38540 has a separate seal maker, 制章人;
see docs/seals.md). Signatures are ECDSA P-256 / SHA-256 in the GB/T 38540 structure: SM2 through
``gmssl`` was measured and is too slow here, and the city CA cannot certify SM2 keys (docs/seals.md).
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import io
import math
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from PIL import Image, ImageDraw, ImageFont

from node.adapters.pki.common import CA_KEY_FILE, write_atomically
from node.adapters.seal_keys import (
    DEPT_URN_PREFIX,
    CertificateAuthority,
    TrustBundle,
    verify_department_certificate,
)
from node.domain import seal as ses
from node.domain.errors import DomainError, ErrorKind
from node.domain.licence import canonical_json
from node.domain.seal import SealRejected, VerdictStatus

KEY_FILE = "seal.key"
CERT_FILE = "seal.pem"
IMAGE_FILE = "seal.png"
SEAL_FILE = "seal.der"
SEAL_VALIDITY_DAYS = 825
IMAGE_SIZE = 320
SEAL_RED = (220, 20, 30, 255)

_ECDSA_SHA256 = ec.ECDSA(hashes.SHA256())
# Noto CJK is the Debian package fonts-noto-cjk; without a CJK font the ring carries the department code.
_FONT_CANDIDATES = (
    "/usr/share/fonts/opentype/noto/NotoSerifCJK-Bold.ttc",
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Bold.ttc",
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc",
)


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    with open(directory / ".seal.lock", "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


# --------------------------------------------------------------------------------------------
# the seal image


def _cjk_font(size: int) -> ImageFont.FreeTypeFont | None:
    for path in _FONT_CANDIDATES:
        if Path(path).is_file():
            with contextlib.suppress(OSError):
                return ImageFont.truetype(path, size, index=2 if path.endswith(".ttc") else 0)
    return None


def _star(cx: float, cy: float, outer: float) -> list[tuple[float, float]]:
    inner = outer * 0.382
    points = []
    for i in range(10):
        radius = outer if i % 2 == 0 else inner
        angle = -math.pi / 2 + i * math.pi / 5
        points.append((cx + radius * math.cos(angle), cy + radius * math.sin(angle)))
    return points


def render_seal_image(name: str, fallback_text: str) -> bytes:
    """A red round seal (PNG, transparent background): ``name`` around the upper ring, a star inside."""
    size = IMAGE_SIZE
    image = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    draw = ImageDraw.Draw(image)
    margin, ring = 8, 10
    draw.ellipse((margin, margin, size - margin, size - margin), outline=SEAL_RED, width=ring)
    centre = size / 2
    draw.polygon(_star(centre, centre, size * 0.16), fill=SEAL_RED)
    font = _cjk_font(34)
    text = name if font is not None else fallback_text
    if font is None:
        font = ImageFont.load_default(size=26)
    chars = list(text)[:24]
    radius = centre - margin - ring - 26
    span = min(250.0, 22.0 * len(chars))  # degrees of the ring the text covers, centred on the top
    for i, char in enumerate(chars):
        angle = -90 - span / 2 + (span * (i + 0.5) / len(chars))
        glyph = Image.new("RGBA", (48, 48), (0, 0, 0, 0))
        ImageDraw.Draw(glyph).text((24, 24), char, font=font, fill=SEAL_RED, anchor="mm")
        glyph = glyph.rotate(-(angle + 90), resample=Image.Resampling.BICUBIC)
        x = centre + radius * math.cos(math.radians(angle))
        y = centre + radius * math.sin(math.radians(angle))
        image.alpha_composite(glyph, (int(x - 24), int(y - 24)))
    out = io.BytesIO()
    image.save(out, format="PNG", optimize=True)
    return out.getvalue()


# --------------------------------------------------------------------------------------------
# a department's seal


def _der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def es_id_for(node_code: str, department_code: str) -> str:
    return f"TB{node_code}-{department_code}"


@dataclass(frozen=True)
class DepartmentSeal:
    """One department's seal, loaded from its directory; signs data hashes into ``SES_Signature`` DER."""

    directory: Path
    node_code: str
    department_code: str
    name: str
    certificate: x509.Certificate
    seal_der: bytes
    _key: ec.EllipticCurvePrivateKey

    def __repr__(self) -> str:  # the key stays out of reprs, hence out of logs
        return f"DepartmentSeal({self.node_code}/{self.department_code}, {self.name!r})"

    @property
    def issuer(self) -> str:
        return f"{self.node_code}/{self.department_code}"

    @property
    def certificate_pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    @property
    def image_png(self) -> bytes:
        return (self.directory / IMAGE_FILE).read_bytes()

    @classmethod
    def ensure(
        cls,
        seals_dir: Path,
        node_code: str,
        department_code: str,
        name: str,
        ca: CertificateAuthority,
        *,
        days: int = SEAL_VALIDITY_DAYS,
        not_before: datetime | None = None,
    ) -> DepartmentSeal:
        """Load the department's seal, making the key, certificate, image and seal when missing or stale.

        The key is created once and kept; a certificate that is missing, not from ``ca`` or expired is
        re-issued (``not_before`` backdates it, for tests of expiry) and the seal remade around it.
        """
        directory = Path(seals_dir) / department_code
        with _locked(directory):
            key_path = directory / KEY_FILE
            if key_path.exists():
                key = _load_key(key_path)
            else:
                key = ec.generate_private_key(ec.SECP256R1())
                pem = key.private_bytes(
                    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
                )
                write_atomically(key_path, pem, 0o600)
            current = cls._load_unlocked(directory, key) if (directory / SEAL_FILE).exists() else None
            if current is not None and current.name == name and _still_good(current.certificate, ca, not_before):
                return current
            public_pem = key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            cert_pem = ca.issue_department_certificate(
                node_code, department_code, public_pem, days, not_before=not_before
            )
            cert = x509.load_pem_x509_certificate(cert_pem)
            image = render_seal_image(name, department_code)
            description = ses.SealDescription(
                es_id=es_id_for(node_code, department_code),
                name=name,
                created=datetime.now(UTC),
                valid_start=cert.not_valid_before_utc,
                valid_end=cert.not_valid_after_utc,
                image_png=image,
            )
            info = ses.seal_info(description, _der(cert))
            signed = key.sign(ses.encode(info), _ECDSA_SHA256)
            seal_der = ses.encode(ses.seal(info, _der(cert), ses.ALG_ECDSA_SHA256, signed))
            write_atomically(directory / CERT_FILE, cert_pem, 0o644)
            write_atomically(directory / IMAGE_FILE, image, 0o644)
            write_atomically(directory / SEAL_FILE, seal_der, 0o644)
            return cls(directory, node_code, department_code, name, cert, seal_der, key)

    @classmethod
    def load(cls, seals_dir: Path, department_code: str) -> DepartmentSeal:
        directory = Path(seals_dir) / department_code
        if not (directory / KEY_FILE).exists() or not (directory / SEAL_FILE).exists():
            raise DomainError(
                "seal_missing",
                f"部门 {department_code} 尚无电子印章",
                f"department {department_code} has no electronic seal yet",
                ErrorKind.NOT_FOUND,
            )
        return cls._load_unlocked(directory, _load_key(directory / KEY_FILE))

    @classmethod
    def _load_unlocked(cls, directory: Path, key: ec.EllipticCurvePrivateKey) -> DepartmentSeal:
        cert = x509.load_pem_x509_certificate((directory / CERT_FILE).read_bytes())
        seal_der = (directory / SEAL_FILE).read_bytes()
        parsed = ses.SESeal.load(seal_der)
        name = parsed["eSealInfo"]["property"]["name"].native
        uri = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        _, node, dept = uri.get_values_for_type(x509.UniformResourceIdentifier)[0].rsplit(":", 2)
        return cls(directory, node, dept, name, cert, seal_der, key)

    def sign(
        self,
        data_hash: bytes,
        property_info: str,
        *,
        at: datetime | None = None,
        extensions: Mapping[str, bytes] | None = None,
    ) -> bytes:
        """An ``SES_Signature`` (DER) over ``data_hash``; refused when the seal certificate is not valid ``at``."""
        when = at or datetime.now(UTC)
        if not self.certificate.not_valid_before_utc <= when <= self.certificate.not_valid_after_utc:
            raise DomainError(
                "seal_expired",
                f"部门 {self.department_code} 的印章证书不在有效期内，不能签章",
                f"the seal certificate of department {self.department_code} is not valid now: cannot seal",
                ErrorKind.CONFLICT,
            )
        return self.sign_unchecked(data_hash, property_info, when, extensions)

    def sign_unchecked(
        self, data_hash: bytes, property_info: str, when: datetime, extensions: Mapping[str, bytes] | None = None
    ) -> bytes:
        """Sign without the validity check: only for tests that need an out-of-validity signature."""
        eseal = ses.SESeal.load(self.seal_der)
        tbs = ses.to_be_signed(eseal, when, data_hash, property_info, extensions)
        value = self._key.sign(ses.encode(tbs), _ECDSA_SHA256)
        return ses.encode(ses.signature(tbs, _der(self.certificate), ses.ALG_ECDSA_SHA256, value))

    def sign_bytes(self, data: bytes) -> bytes:
        """A bare ECDSA signature (DER) by the seal key, for compact payloads such as a QR code."""
        return self._key.sign(data, _ECDSA_SHA256)


def seal_name(node_name: str, department_name: str) -> str:
    """The name on a seal: the node's name and the department's, without a parenthetical (``公安局（户政）``)."""
    base = re.sub(r"[（(].*?[）)]", "", department_name).strip()
    return f"{node_name}{base}"


def ensure_node_seals(
    seals_dir: Path,
    node_code: str,
    node_name: str,
    departments: Iterable[tuple[str, str]],
    ca: CertificateAuthority,
) -> dict[str, DepartmentSeal]:
    """Every department's seal of one node (``departments``: code, Chinese name), for provisioning."""
    return {
        code: DepartmentSeal.ensure(seals_dir, node_code, code, seal_name(node_name, name), ca)
        for code, name in departments
    }


class SealBook:
    """A node's department seals as the result service uses them: ``<data dir>/seals/<department>/``.

    A seal provisioning made is loaded as it is; a missing (or stale) one is made on first use only where
    the city CA's key is at hand (``ca_dir``: the local federation and tests, where provisioning and the
    nodes share a machine). Elsewhere a missing seal is the bilingual ``seal_missing``: provision it.
    """

    def __init__(self, seals_dir: Path, node_code: str, node_name: str, ca_dir: Path | None = None) -> None:
        self.seals_dir = Path(seals_dir)
        self.node_code = node_code
        self.node_name = node_name
        self.ca_dir = ca_dir
        self._loaded: dict[str, DepartmentSeal] = {}

    def __repr__(self) -> str:
        return f"SealBook({self.node_code}, {self.seals_dir})"

    def seal_for(self, department_code: str, department_name: str) -> DepartmentSeal:
        seal = self._loaded.get(department_code)
        now = datetime.now(UTC)
        if seal is not None and seal.certificate.not_valid_after_utc > now + timedelta(days=1):
            return seal
        if self.ca_dir is not None and (Path(self.ca_dir) / CA_KEY_FILE).exists():
            ca = CertificateAuthority.load(Path(self.ca_dir))
            name = seal_name(self.node_name, department_name)
            seal = DepartmentSeal.ensure(self.seals_dir, self.node_code, department_code, name, ca)
        else:
            seal = DepartmentSeal.load(self.seals_dir, department_code)
        self._loaded[department_code] = seal
        return seal


def _load_key(path: Path) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise DomainError("key_invalid", f"印章私钥 {path} 无效", f"seal key {path} is not an EC key")
    return key


def _still_good(cert: x509.Certificate, ca: CertificateAuthority, not_before: datetime | None) -> bool:
    if not_before is not None:
        return cert.not_valid_before_utc == not_before.astimezone(UTC).replace(microsecond=0)
    try:
        verify_department_certificate(cert.public_bytes(serialization.Encoding.PEM), ca.certificate_pem)
    except DomainError:
        return False
    return cert.not_valid_after_utc - datetime.now(UTC) > timedelta(days=30)


# --------------------------------------------------------------------------------------------
# checking a seal signature


@dataclass(frozen=True)
class CheckedSeal:
    node_code: str
    department_code: str
    seal_name: str
    signed_at: datetime
    property_info: str
    extensions: dict[str, bytes]
    certificate: x509.Certificate

    @property
    def issuer(self) -> str:
        return f"{self.node_code}/{self.department_code}"


def _verify_ecdsa(cert: x509.Certificate, signature: bytes, data: bytes) -> bool:
    key = cert.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey):
        return False
    try:
        key.verify(signature, data, _ECDSA_SHA256)
    except InvalidSignature:
        return False
    return True


def load_certificate(data: bytes) -> x509.Certificate:
    """A certificate (PEM or DER) from an untrusted place, fully parsed now; else :class:`SealRejected`.

    ``cryptography`` parses fields lazily, so a damaged certificate would otherwise fail later,
    wherever a field is first read.
    """
    try:
        cert = (
            x509.load_pem_x509_certificate(data)
            if data.lstrip().startswith(b"-----BEGIN")
            else x509.load_der_x509_certificate(data)
        )
        _ = (cert.issuer, cert.subject, cert.serial_number, cert.not_valid_before_utc, cert.not_valid_after_utc)
        _ = (cert.public_key(), list(cert.extensions), cert.signature, cert.tbs_certificate_bytes)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise SealRejected(VerdictStatus.TAMPERED, "证书无法解析", "the certificate is unreadable") from exc
    return cert


def issued_by_trusted_ca(cert: x509.Certificate, trust: TrustBundle) -> bool:
    """Whether ``cert`` was signed by the bundle's CA, whatever the dates."""
    ca = x509.load_pem_x509_certificate(trust.ca_pem)
    if cert.issuer != ca.subject:
        return False
    try:
        cert.verify_directly_issued_by(ca)
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True


def _department_of(cert: x509.Certificate) -> tuple[str, str]:
    """(node, department) from a department certificate's ``urn:tongban:dept`` name matching its CN."""
    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        uris = [u for u in names.get_values_for_type(x509.UniformResourceIdentifier) if u.startswith(DEPT_URN_PREFIX)]
        common_names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    except x509.ExtensionNotFound:
        uris, common_names = [], []
    if uris:
        _, node, dept = uris[0].rsplit(":", 2)
        if common_names and common_names[0].value == dept:
            return node, dept
    raise SealRejected(VerdictStatus.UNKNOWN_ISSUER, "不是通办部门证书", "not a Tongban department certificate")


def trusted_department(cert: x509.Certificate, trust: TrustBundle) -> tuple[str, str]:
    """(node, department) of a department certificate from the bundle's CA, whatever the dates.

    For signatures that carry no trusted time (QR codes, records): the certificate must come from
    the CA and not be revoked; its validity period is not checked against an untrusted claim.
    """
    if not issued_by_trusted_ca(cert, trust):
        raise SealRejected(
            VerdictStatus.UNKNOWN_ISSUER, "证书不是由受信任的城市 CA 签发", "the certificate is not from the trusted CA"
        )
    node, dept = _department_of(cert)
    if trust.is_revoked(cert.serial_number):
        raise SealRejected(
            VerdictStatus.REVOKED, "签名证书已被吊销", "the signing certificate is revoked", f"{node}/{dept}"
        )
    return node, dept


def verify_bytes(cert: x509.Certificate, signature: bytes, data: bytes) -> bool:
    """Check a bare signature made by :meth:`DepartmentSeal.sign_bytes`."""
    return _verify_ecdsa(cert, signature, data)


def check_signature(signature_der: bytes, data_hash: bytes, trust: TrustBundle) -> CheckedSeal:
    """Verify an ``SES_Signature`` over ``data_hash`` against ``trust``; raises :class:`SealRejected`.

    Order: structure and the certificate's three copies → certificate signed by the trusted CA
    (else unknown issuer) → seal and signature values → the signed hash (any failure so far:
    tampered) → certificate and seal valid at the signing time (else expired) → revocation (CRL).
    A certificate inside the structure is trusted only through the bundle's CA.
    """
    try:
        parsed = ses.parse_signature(signature_der)
    except DomainError as exc:
        raise SealRejected(VerdictStatus.TAMPERED, exc.message_zh, exc.message_en) from exc
    # The certificate is in the structure three times (seal's list, seal maker, signer): copies that
    # differ mean the file was changed, whatever the certificate then claims about its issuer.
    if parsed.signer_cert not in parsed.seal_cert_list or parsed.seal_maker_cert != parsed.signer_cert:
        raise SealRejected(
            VerdictStatus.TAMPERED, "签章者证书与印章不匹配", "the signer certificate does not match the seal"
        )
    cert = load_certificate(parsed.signer_cert)
    if not issued_by_trusted_ca(cert, trust):
        raise SealRejected(
            VerdictStatus.UNKNOWN_ISSUER,
            "印章证书不是由受信任的城市 CA 签发",
            "the seal certificate is not from the trusted city CA",
        )
    node, dept = _department_of(cert)
    issuer = f"{node}/{dept}"
    if parsed.algorithm not in ses.SUPPORTED_ALGORITHMS or parsed.seal_algorithm not in ses.SUPPORTED_ALGORITHMS:
        raise SealRejected(
            VerdictStatus.TAMPERED, "不支持的签名算法", f"unsupported algorithm {parsed.algorithm}", issuer
        )
    if not _verify_ecdsa(cert, parsed.seal_signed_value, parsed.seal_info_der):
        raise SealRejected(VerdictStatus.TAMPERED, "电子印章签名无效", "the seal's own signature fails", issuer)
    if not _verify_ecdsa(cert, parsed.signature_value, parsed.tbs_der):
        raise SealRejected(VerdictStatus.TAMPERED, "电子签章签名无效", "the signature value fails", issuer)
    if parsed.data_hash != data_hash:
        raise SealRejected(
            VerdictStatus.TAMPERED,
            "文件内容与签章时的摘要不符（文件已被改动）",
            "the document does not match the signed hash (it was changed)",
            issuer,
        )
    # only now, with every signature good, is the signing time the signer's own statement
    try:
        verify_department_certificate(cert.public_bytes(serialization.Encoding.PEM), trust.ca_pem, parsed.signed_at)
    except DomainError as exc:
        raise SealRejected(
            VerdictStatus.EXPIRED, f"签章时印章证书不在有效期内：{exc.message_zh}", exc.message_en, issuer
        ) from exc
    if not parsed.seal_valid_start <= parsed.signed_at <= parsed.seal_valid_end:
        raise SealRejected(
            VerdictStatus.EXPIRED, "签章时电子印章不在有效期内", "the seal was not valid when it signed", issuer
        )
    if trust.is_revoked(cert.serial_number):
        raise SealRejected(VerdictStatus.REVOKED, "印章证书已被吊销", "the seal certificate has been revoked", issuer)
    return CheckedSeal(node, dept, parsed.seal_name, parsed.signed_at, parsed.property_info, parsed.extensions, cert)


# --------------------------------------------------------------------------------------------
# signed records (licences, their revocations and replacements)

RECORD_SIGNATURE_ALG = "ES256"
MAX_RECORD_BYTES = 64 * 1024


def sign_record(seal: DepartmentSeal, record: Mapping[str, Any]) -> dict[str, Any]:
    """``{"record", "signature"}``: ES256 by the seal key over the record's canonical JSON.

    The record must name this seal's node and department as its issuer; the signature carries the
    department certificate (PEM) so anyone holding the city CA certificate can check it.
    """
    if record.get("issuer_node") != seal.node_code or record.get("issuer_department") != seal.department_code:
        raise DomainError(
            "record_issuer_mismatch",
            "记录的颁发部门与签章部门不符",
            f"the record's issuer is not {seal.issuer}",
            ErrorKind.FORBIDDEN,
        )
    value = seal.sign_bytes(canonical_json(record))
    return {
        "record": dict(record),
        "signature": {
            "alg": RECORD_SIGNATURE_ALG,
            "cert": seal.certificate_pem.decode("ascii"),
            "value": base64.b64encode(value).decode("ascii"),
        },
    }


def verify_signed_record(document: Mapping[str, Any], trust: TrustBundle) -> dict[str, Any]:
    """The record of a signed document after checking it; raises :class:`SealRejected` otherwise."""
    record, signature = document.get("record"), document.get("signature")
    if not isinstance(record, Mapping) or not isinstance(signature, Mapping):
        raise SealRejected(VerdictStatus.TAMPERED, "签名记录格式不正确", "not a signed record")
    payload = canonical_json(record)
    if len(payload) > MAX_RECORD_BYTES or signature.get("alg") != RECORD_SIGNATURE_ALG:
        raise SealRejected(VerdictStatus.TAMPERED, "签名记录过大或算法不受支持", "record too large or bad algorithm")
    try:
        cert = load_certificate(str(signature.get("cert", "")).encode("ascii"))
        value = base64.b64decode(str(signature.get("value", "")), validate=True)
    except (ValueError, UnicodeError) as exc:
        raise SealRejected(VerdictStatus.TAMPERED, "签名无法解析", "unreadable signature value") from exc
    node, dept = trusted_department(cert, trust)
    issuer = f"{node}/{dept}"
    if record.get("issuer_node") != node or record.get("issuer_department") != dept:
        raise SealRejected(
            VerdictStatus.TAMPERED, "记录的颁发部门与签名证书不符", "the record names another issuer", issuer
        )
    if not _verify_ecdsa(cert, value, payload):
        raise SealRejected(VerdictStatus.TAMPERED, "记录签名无效（内容被改动）", "the record's signature fails", issuer)
    return dict(record)

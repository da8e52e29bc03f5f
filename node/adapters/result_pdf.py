"""Sealed result documents: render a case's result as a PDF, seal it, and verify it offline.

Owns the per-matter templates (decision letter 决定书, certificate 证明, licence 许可证), the PDF
layout (reportlab; the CID font STSong-Light needs no font file), the QR code (segno) and the way
the seal travels inside the file.

How a PDF is sealed (docs/seals.md):

1. The page is rendered with the seal image and a QR code. The QR carries a verification URL
   ``<base>/verify?v=1&d=<document id>&i=<node>/<department>&h=<content hash>&s=<signature>``: the
   content hash is SHA-256 of the canonical JSON of the document's content record, the signature
   the department seal key's ECDSA over ``tongban-qr/1|d|i|h``. A scanned QR verifies on its own.
2. The rendered bytes ``P`` are hashed (SHA-256) and signed into a GB/T 38540 ``SES_Signature``
   whose ``propertyInfo`` holds the document id and the printed QR payload and whose ``extDatas``
   holds the content record.
3. The signature is appended to ``P`` as a PDF incremental update: one unreferenced stream object
   ``<< /Type /TongbanSeal >>`` (the DER), an xref section and a trailer pointing back at ``P``'s.
   Readers show ``P`` unchanged.

Verification rebuilds that update from the parsed values and requires it byte for byte, so one
changed byte anywhere — in ``P``, the seal or the trailer — makes the file ``tampered``.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import io
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from urllib.parse import parse_qs, urlencode, urlsplit

import segno
from cryptography.hazmat.primitives.serialization import Encoding
from reportlab import rl_config
from reportlab.lib.pagesizes import A4
from reportlab.lib.units import mm
from reportlab.lib.utils import ImageReader
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.cidfonts import UnicodeCIDFont
from reportlab.pdfgen import canvas

from node.adapters.seal import (
    CheckedSeal,
    DepartmentSeal,
    check_signature,
    load_certificate,
    trusted_department,
    verify_bytes,
)
from node.adapters.seal_keys import TrustBundle
from node.domain.errors import DomainError
from node.domain.seal import SealRejected, Verdict, VerdictStatus

FONT = "STSong-Light"
CONTENT_OID = "2.25.118998126417346427190357934137385432471"  # UUID arc: a private OID needing no registry
PROPERTY_PREFIX = "tongban-result/1"
QR_PREFIX = "tongban-qr/1"
DEFAULT_VERIFY_BASE = "https://tongban.invalid"
MAX_PDF_BYTES = 20 * 1024 * 1024
_SEAL_MARKER = b" 0 obj\n<< /Type /TongbanSeal /Length "
_DOC_ID = re.compile(r"^[0-9A-Za-z._:-]{1,80}$")

pdfmetrics.registerFont(UnicodeCIDFont(FONT))
# Without reportlab's optional C accelerator, ASCII85-encoding the images costs more than rendering
# the page; binary (Flate) image streams are smaller too.
rl_config.useA85 = 0
QR_MASK = 4  # a fixed mask pattern skips segno's evaluation of all eight (~10 ms of pure Python)


# --------------------------------------------------------------------------------------------
# templates and content


@dataclass(frozen=True)
class Template:
    title_zh: str
    title_en: str
    body_zh: str  # str.format over the content's fields and data items


TEMPLATES: dict[str, Template] = {
    "decision": Template(
        "准予行政许可决定书",
        "Decision to grant",
        "{holder_name}：你（单位）于 {applied_on} 提出的「{matter_name}」申请（受理编号 {case_no}），"
        "经审查，符合法定条件、标准，根据有关规定，决定准予行政许可。",
    ),
    "certificate": Template(
        "证明",
        "Certificate",
        "兹证明 {holder_name} 的「{matter_name}」事项（受理编号 {case_no}）已办结，情况如下。",
    ),
    "licence": Template(
        "许可证",
        "Licence",
        "持证人 {holder_name} 经审查准予「{matter_name}」（受理编号 {case_no}），"
        "电子证照标识 {licence_id}，有效期至 {valid_until}。",
    ),
    "rejection": Template(
        "不予行政许可决定书",
        "Decision not to grant",
        "{holder_name}：你（单位）于 {applied_on} 提出的「{matter_name}」申请（受理编号 {case_no}），"
        "经审查，不符合法定条件、标准，决定不予办理，理由见下。"
        "如不服本决定，可以依法申请行政复议或者提起行政诉讼。",
    ),
    # 财政电子票据: the receipt of a paid fee, sealed by the collecting department.
    "receipt": Template(
        "非税收入电子缴款票据",
        "Electronic receipt (non-tax revenue)",
        "兹收到 {holder_name} 缴纳的「{matter_name}」（受理编号 {case_no}）费用，"
        "金额人民币 {缴款金额} 元，缴款码 {缴款码}。",
    ),
}


@dataclass(frozen=True)
class ResultContent:
    """What a result document states; its canonical JSON is what the QR code's hash covers."""

    document_id: str
    kind: str  # a key of TEMPLATES
    matter_code: str
    matter_name: str
    case_no: str
    holder_name: str
    holder_key: str  # the person's or enterprise's key, never the raw ID number
    issuer_name: str  # the department's name as printed
    issued_on: date
    applied_on: date | None = None
    valid_until: date | None = None
    licence_id: str | None = None
    items: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in TEMPLATES:
            raise DomainError(
                "result_template_unknown",
                f"未知的结果文书模板 {self.kind!r}",
                f"unknown result template {self.kind!r} (use {', '.join(TEMPLATES)})",
            )
        if not _DOC_ID.match(self.document_id):
            raise DomainError("document_id_invalid", "文书编号格式不正确", "the document id is malformed")

    def to_json(self) -> bytes:
        """Canonical JSON (sorted keys, no spaces, UTF-8)."""
        record = {
            "document_id": self.document_id,
            "kind": self.kind,
            "matter_code": self.matter_code,
            "matter_name": self.matter_name,
            "case_no": self.case_no,
            "holder_name": self.holder_name,
            "holder_key": self.holder_key,
            "issuer_name": self.issuer_name,
            "issued_on": self.issued_on.isoformat(),
            "applied_on": self.applied_on.isoformat() if self.applied_on else None,
            "valid_until": self.valid_until.isoformat() if self.valid_until else None,
            "licence_id": self.licence_id,
            "items": dict(sorted(self.items.items())),
        }
        return json.dumps(record, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode("utf-8")

    @classmethod
    def from_json(cls, raw: bytes) -> ResultContent:
        data = json.loads(raw.decode("utf-8"))
        if not isinstance(data, dict):
            raise ValueError("content record is not an object")
        items = data.get("items") or {}
        if not isinstance(items, dict) or not all(isinstance(v, str) for v in items.values()):
            raise ValueError("content items are not strings")
        return cls(
            document_id=str(data["document_id"]),
            kind=str(data["kind"]),
            matter_code=str(data["matter_code"]),
            matter_name=str(data["matter_name"]),
            case_no=str(data["case_no"]),
            holder_name=str(data["holder_name"]),
            holder_key=str(data["holder_key"]),
            issuer_name=str(data["issuer_name"]),
            issued_on=date.fromisoformat(data["issued_on"]),
            applied_on=date.fromisoformat(data["applied_on"]) if data.get("applied_on") else None,
            valid_until=date.fromisoformat(data["valid_until"]) if data.get("valid_until") else None,
            licence_id=data.get("licence_id"),
            items=items,
        )

    @property
    def content_hash(self) -> bytes:
        return hashlib.sha256(self.to_json()).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _qr_message(document_id: str, issuer: str, content_hash: str) -> bytes:
    return f"{QR_PREFIX}|{document_id}|{issuer}|{content_hash}".encode("ascii")


def qr_payload(seal: DepartmentSeal, content: ResultContent, verify_base: str = DEFAULT_VERIFY_BASE) -> str:
    """The verification URL printed as the QR code, signed by the department's seal key."""
    digest = _b64(content.content_hash)
    signature = seal.sign_bytes(_qr_message(content.document_id, seal.issuer, digest))
    query = urlencode({"v": "1", "d": content.document_id, "i": seal.issuer, "h": digest, "s": _b64(signature)})
    return f"{verify_base.rstrip('/')}/verify?{query}"


@dataclass(frozen=True)
class QrFields:
    document_id: str
    issuer: str
    content_hash: str
    signature: bytes


def parse_qr_payload(payload: str) -> QrFields:
    """The fields of a scanned QR payload; a malformed one raises ``qr_invalid``."""
    try:
        if not isinstance(payload, str) or len(payload) > 1024:
            raise ValueError("too long")
        query = parse_qs(urlsplit(payload).query, strict_parsing=True)
        values = {key: query[key][0] for key in ("v", "d", "i", "h", "s") if len(query.get(key, [])) == 1}
        if len(values) != 5 or values["v"] != "1" or not _DOC_ID.match(values["d"]):
            raise ValueError("fields")
        return QrFields(values["d"], values["i"], values["h"], _unb64(values["s"]))
    except (ValueError, KeyError, UnicodeError) as exc:
        raise DomainError(
            "qr_invalid", "二维码内容不是通办核验码", "the QR code is not a Tongban verification code"
        ) from exc


def verify_qr_payload(
    payload: str, trust: TrustBundle, signer_cert_pem: bytes, content: ResultContent | None = None
) -> Verdict:
    """Check a scanned QR: its signature by the department certificate (itself checked against ``trust``).

    ``signer_cert_pem`` comes from the PDF or the node's certificate directory; with ``content`` the
    hash must also match that content record.
    """
    try:
        fields = parse_qr_payload(payload)
    except DomainError as exc:
        return Verdict(VerdictStatus.TAMPERED, None, exc.message_zh, exc.message_en)
    try:
        cert = load_certificate(signer_cert_pem)
        node, dept = trusted_department(cert, trust)
    except SealRejected as rejected:
        return Verdict(rejected.status, rejected.issuer, rejected.zh, rejected.en)
    issuer = f"{node}/{dept}"
    forged = fields.issuer != issuer or not verify_bytes(
        cert, fields.signature, _qr_message(fields.document_id, fields.issuer, fields.content_hash)
    )
    if forged or (content is not None and _b64(content.content_hash) != fields.content_hash):
        return Verdict(
            VerdictStatus.TAMPERED,
            issuer,
            "二维码不是签发部门生成的，或与文书内容不符（二维码被伪造）",
            "the QR code was not made by the issuer or does not match the document (forged QR)",
            fields.document_id,
        )
    if content is not None and content.document_id != fields.document_id:
        return Verdict(VerdictStatus.TAMPERED, issuer, "二维码与文书编号不符", "QR and document id differ")
    if fields.document_id in trust.revoked_documents:
        return Verdict(VerdictStatus.REVOKED, issuer, "已被吊销", "revoked", fields.document_id)
    return Verdict(VerdictStatus.VALID, issuer, "二维码有效", "the QR code is genuine", fields.document_id)


# --------------------------------------------------------------------------------------------
# rendering


def _wrap(text: str, size: float, width: float) -> list[str]:
    lines, line = [], ""
    for char in text:
        if pdfmetrics.stringWidth(line + char, FONT, size) > width:
            lines.append(line)
            line = ""
        line += char
    if line:
        lines.append(line)
    return lines


def _format_fields(content: ResultContent) -> dict[str, str]:
    return {
        "holder_name": content.holder_name,
        "matter_name": content.matter_name,
        "case_no": content.case_no,
        "applied_on": (content.applied_on or content.issued_on).strftime("%Y年%m月%d日"),
        "valid_until": content.valid_until.strftime("%Y年%m月%d日") if content.valid_until else "长期",
        "licence_id": content.licence_id or "",
        **content.items,
    }


@functools.lru_cache(maxsize=64)
def _seal_reader(png: bytes) -> ImageReader:
    """A decoded seal image, kept: a node seals with a handful of department seals, over and over."""
    return ImageReader(io.BytesIO(png))


def _draw_qr(pdf: canvas.Canvas, text: str, x: float, y: float, size: float) -> None:
    """The QR code as vector squares (each row's runs of dark modules as one rectangle): crisp and fast."""
    matrix = segno.make(text, error="m", mask=QR_MASK).matrix
    module = size / len(matrix)
    path = pdf.beginPath()
    for row_index, row in enumerate(matrix):
        top = y + size - (row_index + 1) * module
        start = None
        for col, dark in enumerate([*row, 0]):
            if dark and start is None:
                start = col
            elif not dark and start is not None:
                path.rect(x + start * module, top, (col - start) * module, module)
                start = None
    pdf.setFillColorRGB(0, 0, 0)
    pdf.drawPath(path, stroke=0, fill=1)


def render_pdf(content: ResultContent, seal_image_png: bytes, qr_text: str) -> bytes:
    """The unsealed PDF of ``content`` (deterministic: reportlab's invariant mode)."""
    template = TEMPLATES[content.kind]
    buffer = io.BytesIO()
    pdf = canvas.Canvas(buffer, pagesize=A4, invariant=1)
    pdf.setTitle(f"{template.title_zh} {content.document_id}")
    pdf.setAuthor(content.issuer_name)
    width, height = A4
    left, right = 25 * mm, width - 25 * mm
    pdf.setFont(FONT, 22)
    pdf.drawCentredString(width / 2, height - 40 * mm, template.title_zh)
    pdf.setFont(FONT, 10)
    pdf.drawCentredString(width / 2, height - 47 * mm, f"{template.title_en}  ·  No. {content.document_id}")
    y = height - 62 * mm
    pdf.setFont(FONT, 13)
    body = template.body_zh.format_map(_format_fields(content))
    for line in _wrap(body, 13, right - left):
        pdf.drawString(left, y, line)
        y -= 8 * mm
    y -= 4 * mm
    for label, value in content.items.items():
        for i, line in enumerate(_wrap(f"{label}：{value}", 12, right - left - 8 * mm)):
            pdf.setFont(FONT, 12)
            pdf.drawString(left + (0 if i == 0 else 8 * mm), y, line)
            y -= 7 * mm
    signature_y = 70 * mm
    pdf.setFont(FONT, 13)
    pdf.drawRightString(right, signature_y + 14 * mm, content.issuer_name)
    pdf.drawRightString(right, signature_y + 6 * mm, content.issued_on.strftime("%Y年%m月%d日"))
    seal_size = 42 * mm
    pdf.drawImage(
        _seal_reader(seal_image_png),
        right - seal_size + 4 * mm,
        signature_y - 8 * mm,
        seal_size,
        seal_size,
        mask="auto",
    )
    _draw_qr(pdf, qr_text, left, 22 * mm, 34 * mm)
    pdf.setFont(FONT, 8)
    pdf.drawString(left, 18 * mm, "扫码核验 / scan to verify · tongban verify FILE.pdf")
    pdf.showPage()
    pdf.save()
    return buffer.getvalue()


# --------------------------------------------------------------------------------------------
# sealing: the incremental update


def _trailer_facts(pdf: bytes) -> tuple[int, bytes, int]:
    """(next object number, /Root reference, offset of the last xref) of an unsealed PDF."""
    start = pdf.rfind(b"startxref")
    trailer = pdf.rfind(b"trailer", 0, start)
    if start < 0 or trailer < 0:
        raise ValueError("no trailer")
    prev = int(pdf[start + len(b"startxref") :].split()[0])
    size = re.search(rb"/Size\s+(\d+)", pdf[trailer:start])
    root = re.search(rb"/Root\s+(\d+\s+\d+\s+R)", pdf[trailer:start])
    if size is None or root is None:
        raise ValueError("trailer without /Size or /Root")
    return int(size.group(1)), root.group(1), prev


def _update(offset: int, obj: int, root: bytes, prev: int, seal_der: bytes) -> bytes:
    body = b"%d 0 obj\n<< /Type /TongbanSeal /Length %d >>\nstream\n" % (obj, len(seal_der))
    body += seal_der + b"\nendstream\nendobj\n"
    xref = b"xref\n0 1\n0000000000 65535 f \n%d 1\n%010d 00000 n \n" % (obj, offset)
    trailer = b"trailer\n<< /Size %d /Root %s /Prev %d >>\nstartxref\n%d\n%%%%EOF\n" % (
        obj + 1,
        root,
        prev,
        offset + len(body),
    )
    return body + xref + trailer


def attach_seal(pdf: bytes, seal_der: bytes) -> bytes:
    """``pdf`` with ``seal_der`` appended as an incremental update."""
    obj, root, prev = _trailer_facts(pdf)
    if not pdf.endswith(b"\n"):
        pdf += b"\n"
    return pdf + _update(len(pdf), obj, root, prev, seal_der)


def split_sealed(pdf: bytes) -> tuple[bytes, bytes]:
    """(the signed bytes, the seal DER) of a sealed PDF; raises ValueError when there is no intact seal."""
    marker = pdf.rfind(_SEAL_MARKER)
    if marker < 0:
        raise ValueError("no Tongban seal in this file")
    offset = pdf.rfind(b"\n", 0, marker) + 1
    obj = int(pdf[offset:marker])
    length_end = pdf.index(b" >>", marker)
    length = int(pdf[marker + len(_SEAL_MARKER) : length_end])
    stream_start = length_end + len(b" >>\nstream\n")
    seal_der = pdf[stream_start : stream_start + length]
    signed = pdf[:offset]
    next_obj, root, prev = _trailer_facts(signed)
    if next_obj != obj or pdf[offset:] != _update(offset, obj, root, prev, seal_der):
        raise ValueError("the seal update is not intact")
    return signed, seal_der


def seal_pdf(pdf: bytes, seal: DepartmentSeal, content: ResultContent, qr_text: str) -> bytes:
    """Seal an already rendered ``pdf`` whose QR code shows ``qr_text``."""
    property_info = f"{PROPERTY_PREFIX};doc={content.document_id};qr={qr_text}"
    der = seal.sign(hashlib.sha256(pdf).digest(), property_info, extensions={CONTENT_OID: content.to_json()})
    return attach_seal(pdf, der)


def seal_result(seal: DepartmentSeal, content: ResultContent, verify_base: str = DEFAULT_VERIFY_BASE) -> bytes:
    """Render and seal a result: the file a person downloads."""
    qr_text = qr_payload(seal, content, verify_base)
    return seal_pdf(render_pdf(content, seal.image_png, qr_text), seal, content, qr_text)


# --------------------------------------------------------------------------------------------
# verification


def _content_of(checked: CheckedSeal) -> tuple[ResultContent, str]:
    prefix = f"{PROPERTY_PREFIX};doc="
    info = checked.property_info
    if not info.startswith(prefix) or ";qr=" not in info:
        raise ValueError("property info is not a Tongban result's")
    document_id, _, qr_text = info[len(prefix) :].partition(";qr=")
    content = ResultContent.from_json(checked.extensions[CONTENT_OID])
    if content.document_id != document_id:
        raise ValueError("document id differs between property info and content")
    return content, qr_text


def verify_result(pdf: bytes, trust: TrustBundle, *, at: datetime | None = None) -> Verdict:
    """valid / tampered / revoked / expired / unknown issuer for a sealed result PDF, offline."""
    when = at or datetime.now(UTC)
    if not isinstance(pdf, bytes | bytearray) or len(pdf) > MAX_PDF_BYTES or not pdf.startswith(b"%PDF-"):
        return Verdict(VerdictStatus.TAMPERED, None, "不是 PDF 文件或文件过大", "not a PDF file, or too large")
    try:
        signed, seal_der = split_sealed(bytes(pdf))
    except (ValueError, IndexError) as exc:
        return Verdict(VerdictStatus.TAMPERED, None, "文件没有完整的电子签章", f"no intact electronic seal ({exc})")
    try:
        checked = check_signature(seal_der, hashlib.sha256(signed).digest(), trust)
    except SealRejected as rejected:
        return Verdict(rejected.status, rejected.issuer, rejected.zh, rejected.en)
    try:
        content, qr_text = _content_of(checked)
    except (ValueError, KeyError, TypeError, AttributeError, UnicodeError, DomainError) as exc:
        return Verdict(VerdictStatus.TAMPERED, checked.issuer, "签章中的文书信息无效", f"bad document record: {exc}")
    cert_pem = checked.certificate.public_bytes(Encoding.PEM)
    qr = verify_qr_payload(qr_text, trust, cert_pem, content)
    common = {"document_id": content.document_id, "seal_name": checked.seal_name, "signed_at": checked.signed_at}
    if qr.status is VerdictStatus.TAMPERED:
        return Verdict(VerdictStatus.TAMPERED, checked.issuer, qr.details_zh, qr.details_en, **common)
    if content.document_id in trust.revoked_documents:
        return Verdict(
            VerdictStatus.REVOKED, checked.issuer, "该文书已被吊销", "the document has been revoked", **common
        )
    if content.valid_until is not None and content.valid_until < when.date():
        return Verdict(
            VerdictStatus.EXPIRED,
            checked.issuer,
            f"有效期已于 {content.valid_until:%Y-%m-%d} 届满",
            f"validity ended on {content.valid_until:%Y-%m-%d}",
            **common,
        )
    return Verdict(
        VerdictStatus.VALID,
        checked.issuer,
        f"由 {content.issuer_name}（{checked.seal_name}）签章，文书未被改动",
        f"sealed by {checked.issuer} ({checked.seal_name}); the document is unchanged",
        **common,
    )


def verify_qr_against(pdf: bytes, payload: str, trust: TrustBundle) -> Verdict:
    """A scanned QR checked against the sealed result it claims to be (the issuer's stored copy).

    The department certificate and the content record come from the stored PDF's seal, which must
    itself verify; a QR naming another document, or whose hash or signature does not match, is tampered.
    """
    verdict = verify_result(pdf, trust)
    if verdict.status is VerdictStatus.TAMPERED or verdict.status is VerdictStatus.UNKNOWN_ISSUER:
        return verdict
    signed, seal_der = split_sealed(bytes(pdf))
    checked = check_signature(seal_der, hashlib.sha256(signed).digest(), trust)
    content, _ = _content_of(checked)
    qr = verify_qr_payload(payload, trust, checked.certificate.public_bytes(Encoding.PEM), content)
    if not qr.valid:
        return qr
    return verdict

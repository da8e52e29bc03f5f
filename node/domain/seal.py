"""The electronic seal and seal-signature structures of GB/T 38540 (version 4), DER-encoded.

This module owns the shapes only: building, encoding and decoding ``SESeal`` (电子印章) and
``SES_Signature`` (电子签章) deterministically (DER via asn1crypto), with bounds on what it accepts.
Keys, certificates and signature checks live in :mod:`node.adapters.seal`.

The ASN.1 follows GB/T 38540-2020 version 4 as public implementations of it agree (see
docs/seals.md for what was assumed)::

    SESeal        ::= SEQUENCE { eSealInfo SES_SealInfo, cert OCTET STRING, signAlgID OID, signedValue BIT STRING }
    SES_SealInfo  ::= SEQUENCE { header SES_Header, esID IA5String, property SES_ESPropertyInfo,
                                 picture SES_ESPictrueInfo, extDatas ExtensionDatas OPTIONAL }
    SES_Header    ::= SEQUENCE { ID IA5String ("ES"), version INTEGER (4), Vid IA5String }
    SES_ESPropertyInfo ::= SEQUENCE { type INTEGER, name UTF8String, certListType INTEGER (1),
                                 certList SEQUENCE OF OCTET STRING, createDate, validStart, validEnd GeneralizedTime }
    SES_ESPictrueInfo ::= SEQUENCE { type IA5String, data OCTET STRING, width INTEGER, height INTEGER }
    TBS_Sign      ::= SEQUENCE { version INTEGER, eseal SESeal, timeInfo GeneralizedTime, dataHash BIT STRING,
                                 propertyInfo IA5String, extDatas ExtensionDatas OPTIONAL }
    SES_Signature ::= SEQUENCE { toSign TBS_Sign, cert OCTET STRING, signatureAlgID OID, signature BIT STRING,
                                 timeStamp [0] BIT STRING OPTIONAL }
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, ClassVar

from asn1crypto import core

from node.domain.errors import DomainError, ErrorKind

SEAL_HEADER_ID = "ES"
SEAL_VERSION = 4
VENDOR_ID = "TONGBAN"
SEAL_TYPE_ORGANISATION = 1  # 单位印章 (2 would be a personal seal)
CERT_LIST_CERTIFICATES = 1  # the certificate list holds whole certificates, not digests

ALG_ECDSA_SHA256 = "1.2.840.10045.4.3.2"
ALG_SM2_SM3 = "1.2.156.10197.1.501"
SUPPORTED_ALGORITHMS = frozenset({ALG_ECDSA_SHA256})

MAX_SIGNATURE_BYTES = 256 * 1024  # a seal image of a few KiB, two certificates, a few hashes
MAX_PROPERTY_INFO = 2048


class ExtensionData(core.Sequence):
    _fields: ClassVar[list[Any]] = [
        ("extnID", core.ObjectIdentifier),
        ("critical", core.Boolean, {"default": False}),
        ("extnValue", core.OctetString),
    ]


class ExtensionDatas(core.SequenceOf):
    _child_spec: ClassVar[Any] = ExtensionData


class SESHeader(core.Sequence):
    _fields: ClassVar[list[Any]] = [("id", core.IA5String), ("version", core.Integer), ("vid", core.IA5String)]


class CertList(core.SequenceOf):
    _child_spec: ClassVar[Any] = core.OctetString


class ESPropertyInfo(core.Sequence):
    _fields: ClassVar[list[Any]] = [
        ("type", core.Integer),
        ("name", core.UTF8String),
        ("certListType", core.Integer),
        ("certList", CertList),
        ("createDate", core.GeneralizedTime),
        ("validStart", core.GeneralizedTime),
        ("validEnd", core.GeneralizedTime),
    ]


class ESPictureInfo(core.Sequence):
    _fields: ClassVar[list[Any]] = [
        ("type", core.IA5String),
        ("data", core.OctetString),
        ("width", core.Integer),
        ("height", core.Integer),
    ]


class SealInfo(core.Sequence):
    _fields: ClassVar[list[Any]] = [
        ("header", SESHeader),
        ("esID", core.IA5String),
        ("property", ESPropertyInfo),
        ("picture", ESPictureInfo),
        ("extDatas", ExtensionDatas, {"optional": True}),
    ]


class SESeal(core.Sequence):
    _fields: ClassVar[list[Any]] = [
        ("eSealInfo", SealInfo),
        ("cert", core.OctetString),
        ("signAlgID", core.ObjectIdentifier),
        ("signedValue", core.OctetBitString),
    ]


class TBSSign(core.Sequence):
    _fields: ClassVar[list[Any]] = [
        ("version", core.Integer),
        ("eseal", SESeal),
        ("timeInfo", core.GeneralizedTime),
        ("dataHash", core.OctetBitString),
        ("propertyInfo", core.IA5String),
        ("extDatas", ExtensionDatas, {"optional": True}),
    ]


class SESSignature(core.Sequence):
    _fields: ClassVar[list[Any]] = [
        ("toSign", TBSSign),
        ("cert", core.OctetString),
        ("signatureAlgID", core.ObjectIdentifier),
        ("signature", core.OctetBitString),
        ("timeStamp", core.OctetBitString, {"implicit": 0, "optional": True}),
    ]


def _malformed(en: str) -> DomainError:
    return DomainError("seal_malformed", f"电子签章结构无效：{en}", f"the seal structure is malformed: {en}")


def _second(at: datetime) -> datetime:
    """UTC, whole seconds: DER GeneralizedTime without fractions keeps the encoding canonical."""
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return at.astimezone(UTC).replace(microsecond=0)


@dataclass(frozen=True)
class SealDescription:
    """What a seal says about itself: its id, name, validity and image (PNG)."""

    es_id: str
    name: str
    created: datetime
    valid_start: datetime
    valid_end: datetime
    image_png: bytes
    width_mm: int = 42
    height_mm: int = 42


def seal_info(description: SealDescription, signer_cert_der: bytes) -> SealInfo:
    """The ``SES_SealInfo`` of a seal whose signer certificate list holds ``signer_cert_der``."""
    if not description.es_id.isascii() or not description.es_id:
        raise DomainError("seal_id_invalid", "印章编码必须为 ASCII", "the seal id must be ASCII", ErrorKind.INVALID)
    return SealInfo(
        {
            "header": {"id": SEAL_HEADER_ID, "version": SEAL_VERSION, "vid": VENDOR_ID},
            "esID": description.es_id,
            "property": {
                "type": SEAL_TYPE_ORGANISATION,
                "name": description.name,
                "certListType": CERT_LIST_CERTIFICATES,
                "certList": [signer_cert_der],
                "createDate": _second(description.created),
                "validStart": _second(description.valid_start),
                "validEnd": _second(description.valid_end),
            },
            "picture": {
                "type": "PNG",
                "data": description.image_png,
                "width": description.width_mm,
                "height": description.height_mm,
            },
        }
    )


def seal(info: SealInfo, maker_cert_der: bytes, algorithm: str, signed_value: bytes) -> SESeal:
    return SESeal({"eSealInfo": info, "cert": maker_cert_der, "signAlgID": algorithm, "signedValue": signed_value})


def to_be_signed(
    eseal: SESeal,
    signed_at: datetime,
    data_hash: bytes,
    property_info: str,
    extensions: Mapping[str, bytes] | None = None,
) -> TBSSign:
    """The ``TBS_Sign``; ``extensions`` (OID → value) become its ``extDatas`` in OID order."""
    if len(property_info) > MAX_PROPERTY_INFO or not property_info.isascii():
        raise DomainError(
            "seal_property_invalid",
            "签章属性信息必须为 ASCII 且不超过 2048 字符",
            "the signature's property info must be ASCII and at most 2048 characters",
        )
    fields: dict[str, object] = {
        "version": SEAL_VERSION,
        "eseal": eseal,
        "timeInfo": _second(signed_at),
        "dataHash": data_hash,
        "propertyInfo": property_info,
    }
    if extensions:
        fields["extDatas"] = [{"extnID": oid, "extnValue": extensions[oid]} for oid in sorted(extensions)]
    return TBSSign(fields)


def signature(tbs: TBSSign, signer_cert_der: bytes, algorithm: str, value: bytes) -> SESSignature:
    return SESSignature({"toSign": tbs, "cert": signer_cert_der, "signatureAlgID": algorithm, "signature": value})


def encode(value: core.Asn1Value) -> bytes:
    """Canonical DER."""
    return value.dump(force=True)


@dataclass(frozen=True)
class ParsedSignature:
    """The fields of an ``SES_Signature`` a verifier needs, read and bounds-checked."""

    tbs_der: bytes
    seal_info_der: bytes
    es_id: str
    seal_name: str
    seal_valid_start: datetime
    seal_valid_end: datetime
    seal_cert_list: tuple[bytes, ...]
    seal_maker_cert: bytes
    seal_algorithm: str
    seal_signed_value: bytes
    image_png: bytes
    signed_at: datetime
    data_hash: bytes
    property_info: str
    signer_cert: bytes
    algorithm: str
    signature_value: bytes
    extensions: dict[str, bytes]


def parse_signature(der: bytes) -> ParsedSignature:
    """Decode an ``SES_Signature``; anything malformed, oversized or of another version raises ``seal_malformed``."""
    if not isinstance(der, bytes | bytearray) or not der or len(der) > MAX_SIGNATURE_BYTES:
        raise _malformed("empty or larger than 256 KiB")
    try:
        parsed = SESSignature.load(bytes(der), strict=True)
        tbs = parsed["toSign"]
        eseal = tbs["eseal"]
        info = eseal["eSealInfo"]
        header = info["header"]
        prop = info["property"]
        if header["id"].native != SEAL_HEADER_ID or header["version"].native != SEAL_VERSION:
            raise _malformed("not a version 4 seal (header ES/4)")
        if tbs["version"].native != SEAL_VERSION:
            raise _malformed("not a version 4 signature")
        if prop["certListType"].native != CERT_LIST_CERTIFICATES:
            raise _malformed("only certificate lists (certListType 1) are supported")
        result = ParsedSignature(
            tbs_der=tbs.dump(),
            seal_info_der=info.dump(),
            es_id=info["esID"].native,
            seal_name=prop["name"].native,
            seal_valid_start=prop["validStart"].native,
            seal_valid_end=prop["validEnd"].native,
            seal_cert_list=tuple(c.native for c in prop["certList"]),
            seal_maker_cert=eseal["cert"].native,
            seal_algorithm=eseal["signAlgID"].dotted,
            seal_signed_value=eseal["signedValue"].native,
            image_png=info["picture"]["data"].native,
            signed_at=tbs["timeInfo"].native,
            data_hash=tbs["dataHash"].native,
            property_info=tbs["propertyInfo"].native,
            signer_cert=parsed["cert"].native,
            algorithm=parsed["signatureAlgID"].dotted,
            signature_value=parsed["signature"].native,
            extensions={e["extnID"].dotted: e["extnValue"].native for e in (tbs["extDatas"] or [])},
        )
        canonical = encode(parsed) == bytes(der)
    except DomainError:
        raise
    except (ValueError, TypeError, KeyError, AttributeError, OverflowError) as exc:
        raise _malformed(f"cannot decode ({type(exc).__name__})") from exc
    if not canonical:
        raise _malformed("not in canonical DER")
    return result


class VerdictStatus(StrEnum):
    """What a verifier tells a person about a sealed document or licence."""

    VALID = "valid"
    TAMPERED = "tampered"
    REVOKED = "revoked"
    EXPIRED = "expired"
    UNKNOWN_ISSUER = "unknown_issuer"

    @property
    def label(self) -> str:
        """The word the command line prints (``unknown issuer`` with a space)."""
        return self.value.replace("_", " ")


@dataclass(frozen=True)
class Verdict:
    status: VerdictStatus
    issuer: str | None = None  # "<node code>/<department code>" once the certificate is known
    details_zh: str = ""
    details_en: str = ""
    document_id: str | None = None
    seal_name: str | None = None
    signed_at: datetime | None = None

    @property
    def valid(self) -> bool:
        return self.status is VerdictStatus.VALID


class SealRejected(Exception):
    """A seal check failed; carries the verdict a person should be told (never raised past a verifier)."""

    def __init__(self, status: VerdictStatus, zh: str, en: str, issuer: str | None = None) -> None:
        super().__init__(f"{status.value}: {en}")
        self.status = status
        self.zh = zh
        self.en = en
        self.issuer = issuer

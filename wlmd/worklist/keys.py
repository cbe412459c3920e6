"""Which attributes a worklist query may match on or ask for (the wlmscpfs(1) conformance tables).

The matching-key table mirrors DCMTK 3.6.7 ``wlfsim.cc MatchingKeys`` (docs/compat.md §4.1): the
wildcard flag of each key, the combined date/time pairs, the one matching sequence. Return keys are
those of the 3.7.0 man page, which adds InstitutionalDepartmentName (0008,1040) (a documented
departure from 3.6.7). The expansion tables say what an empty query sequence turns into
(``wlds.cc ExpandEmptySequenceInSearchMask``).
"""

from __future__ import annotations

from dataclasses import dataclass

from pydicom.tag import BaseTag, Tag

SPECIFIC_CHARACTER_SET = Tag(0x0008, 0x0005)
MODALITY = Tag(0x0008, 0x0060)
CODE_VALUE = Tag(0x0008, 0x0100)
CODING_SCHEME_DESIGNATOR = Tag(0x0008, 0x0102)
CODING_SCHEME_VERSION = Tag(0x0008, 0x0103)
CODE_MEANING = Tag(0x0008, 0x0104)
REFERENCED_STUDY_SEQUENCE = Tag(0x0008, 0x1110)
REFERENCED_PATIENT_SEQUENCE = Tag(0x0008, 0x1120)
REFERENCED_SOP_CLASS_UID = Tag(0x0008, 0x1150)
REFERENCED_SOP_INSTANCE_UID = Tag(0x0008, 0x1155)
PREGNANCY_STATUS = Tag(0x0010, 0x21C0)
REQUESTED_CONTRAST_AGENT = Tag(0x0032, 0x1070)
REQUESTED_PROCEDURE_DESCRIPTION = Tag(0x0032, 0x1060)
REQUESTED_PROCEDURE_CODE_SEQUENCE = Tag(0x0032, 0x1064)
SCHEDULED_STATION_AE_TITLE = Tag(0x0040, 0x0001)
SPS_START_DATE = Tag(0x0040, 0x0002)
SPS_START_TIME = Tag(0x0040, 0x0003)
SPS_END_DATE = Tag(0x0040, 0x0004)
SPS_END_TIME = Tag(0x0040, 0x0005)
SCHEDULED_PERFORMING_PHYSICIAN_NAME = Tag(0x0040, 0x0006)
SPS_DESCRIPTION = Tag(0x0040, 0x0007)
SCHEDULED_PROTOCOL_CODE_SEQUENCE = Tag(0x0040, 0x0008)
SPS_ID = Tag(0x0040, 0x0009)
SCHEDULED_STATION_NAME = Tag(0x0040, 0x0010)
SPS_LOCATION = Tag(0x0040, 0x0011)
PRE_MEDICATION = Tag(0x0040, 0x0012)
SPS_STATUS = Tag(0x0040, 0x0020)
SCHEDULED_PROCEDURE_STEP_SEQUENCE = Tag(0x0040, 0x0100)
SPS_COMMENTS = Tag(0x0040, 0x0400)
STUDY_DATE = Tag(0x0008, 0x0020)
STUDY_TIME = Tag(0x0008, 0x0030)
PATIENT_NAME = Tag(0x0010, 0x0010)
PATIENT_ID = Tag(0x0010, 0x0020)
STUDY_INSTANCE_UID = Tag(0x0020, 0x000D)
REQUESTED_PROCEDURE_ID = Tag(0x0040, 0x1001)


@dataclass(frozen=True)
class MatchingKeys:
    """The matching keys of one dataset level: ``keys`` carry the wildcard flag."""

    keys: tuple[tuple[BaseTag, bool], ...]
    combined: tuple[tuple[BaseTag, BaseTag], ...] = ()
    sequences: tuple[tuple[BaseTag, MatchingKeys], ...] = ()


SPS_MATCHING_KEYS = MatchingKeys(
    keys=(
        (SCHEDULED_STATION_AE_TITLE, False),
        (MODALITY, False),
        (SCHEDULED_PERFORMING_PHYSICIAN_NAME, True),
    ),
    combined=((SPS_START_DATE, SPS_START_TIME),),
)

ROOT_MATCHING_KEYS = MatchingKeys(
    keys=(
        (PATIENT_NAME, True),
        (Tag(0x0010, 0x2297), True),  # ResponsiblePerson
        (Tag(0x0010, 0x2298), True),  # ResponsiblePersonRole
        (PATIENT_ID, False),  # no wildcards
        (Tag(0x0008, 0x0050), True),  # AccessionNumber
        (REQUESTED_PROCEDURE_ID, True),
        (Tag(0x0008, 0x0090), True),  # ReferringPhysicianName
        (Tag(0x0010, 0x0040), True),  # PatientSex
        (Tag(0x0032, 0x1032), True),  # RequestingPhysician
        (Tag(0x0038, 0x0010), True),  # AdmissionID
        (Tag(0x0040, 0x1003), True),  # RequestedProcedurePriority
        (Tag(0x0010, 0x0030), True),  # PatientBirthDate
        (Tag(0x0010, 0x0021), True),  # IssuerOfPatientID
    ),
    combined=((STUDY_DATE, STUDY_TIME),),
    sequences=((SCHEDULED_PROCEDURE_STEP_SEQUENCE, SPS_MATCHING_KEYS),),
)


def _tags(*pairs: tuple[int, int]) -> frozenset[BaseTag]:
    return frozenset(Tag(group, element) for group, element in pairs)


def _level_tags(keys: MatchingKeys) -> frozenset[BaseTag]:
    """Every tag that the matching-key table names at one level (validated, never stripped)."""
    tags = {tag for tag, _ in keys.keys}
    tags.update(tag for pair in keys.combined for tag in pair)
    tags.update(tag for tag, _ in keys.sequences)
    return frozenset(tags)


# Supported matching keys per level: the sequence tag that holds them (None = top level).
MATCHING_KEY_TAGS: dict[BaseTag | None, frozenset[BaseTag]] = {
    None: _level_tags(ROOT_MATCHING_KEYS),
    SCHEDULED_PROCEDURE_STEP_SEQUENCE: _level_tags(SPS_MATCHING_KEYS),
}

_CODE_ITEM_TAGS = _tags((0x0008, 0x0100), (0x0008, 0x0102), (0x0008, 0x0103), (0x0008, 0x0104))
_REFERENCE_ITEM_TAGS = _tags((0x0008, 0x1150), (0x0008, 0x1155))

# Supported return keys per level, as listed in wlmscpfs(1) (3.7.0).
RETURN_KEY_TAGS: dict[BaseTag | None, frozenset[BaseTag]] = {
    None: _tags(
        (0x0008, 0x0020), (0x0008, 0x0030), (0x0008, 0x0050), (0x0008, 0x0080),
        (0x0008, 0x0081), (0x0008, 0x1040), (0x0008, 0x0090), (0x0008, 0x1080),
        (0x0008, 0x1110), (0x0008, 0x1120), (0x0010, 0x0010), (0x0010, 0x0020),
        (0x0010, 0x0021), (0x0010, 0x0030), (0x0010, 0x0040), (0x0010, 0x1000),
        (0x0010, 0x1001), (0x0010, 0x1020), (0x0010, 0x1030), (0x0010, 0x1040),
        (0x0010, 0x1080), (0x0010, 0x2000), (0x0010, 0x2110), (0x0010, 0x2160),
        (0x0010, 0x21A0), (0x0010, 0x21B0), (0x0010, 0x21C0), (0x0010, 0x21D0),
        (0x0010, 0x2297), (0x0010, 0x2298), (0x0010, 0x4000), (0x0020, 0x000D),
        (0x0032, 0x1032), (0x0032, 0x1033), (0x0032, 0x1060), (0x0032, 0x1064),
        (0x0038, 0x0010), (0x0038, 0x0011), (0x0038, 0x0050), (0x0038, 0x0300),
        (0x0038, 0x0500), (0x0040, 0x0100), (0x0040, 0x1001), (0x0040, 0x1002),
        (0x0040, 0x1003), (0x0040, 0x1004), (0x0040, 0x1005), (0x0040, 0x1008),
        (0x0040, 0x1009), (0x0040, 0x1010), (0x0040, 0x1400), (0x0040, 0x2001),
        (0x0040, 0x2004), (0x0040, 0x2005), (0x0040, 0x2008), (0x0040, 0x2009),
        (0x0040, 0x2010), (0x0040, 0x2016), (0x0040, 0x2017), (0x0040, 0x2400),
        (0x0040, 0x3001),
    ),
    SCHEDULED_PROCEDURE_STEP_SEQUENCE: _tags(
        (0x0008, 0x0060), (0x0032, 0x1070), (0x0040, 0x0001), (0x0040, 0x0002),
        (0x0040, 0x0003), (0x0040, 0x0004), (0x0040, 0x0005), (0x0040, 0x0006),
        (0x0040, 0x0007), (0x0040, 0x0008), (0x0040, 0x0009), (0x0040, 0x0010),
        (0x0040, 0x0011), (0x0040, 0x0012), (0x0040, 0x0020), (0x0040, 0x0400),
    ),
    SCHEDULED_PROTOCOL_CODE_SEQUENCE: _CODE_ITEM_TAGS,
    REQUESTED_PROCEDURE_CODE_SEQUENCE: _CODE_ITEM_TAGS,
    REFERENCED_STUDY_SEQUENCE: _REFERENCE_ITEM_TAGS,
    REFERENCED_PATIENT_SEQUENCE: _REFERENCE_ITEM_TAGS,
}

# The item an empty query sequence is expanded to: (tag, VR) pairs, or (tag, nested item).
ExpansionItem = tuple[tuple[BaseTag, "str | ExpansionItem"], ...]

_CODE_EXPANSION: ExpansionItem = (
    (CODE_VALUE, "SH"),
    (CODING_SCHEME_VERSION, "SH"),
    (CODING_SCHEME_DESIGNATOR, "SH"),
    (CODE_MEANING, "LO"),
)

SEQUENCE_EXPANSION: dict[BaseTag, ExpansionItem] = {
    SCHEDULED_PROCEDURE_STEP_SEQUENCE: (
        (SCHEDULED_STATION_AE_TITLE, "AE"),
        (SPS_START_DATE, "DA"),
        (SPS_START_TIME, "TM"),
        (MODALITY, "CS"),
        (SCHEDULED_PERFORMING_PHYSICIAN_NAME, "PN"),
        (SPS_DESCRIPTION, "LO"),
        (SCHEDULED_STATION_NAME, "SH"),
        (SPS_LOCATION, "SH"),
        (PRE_MEDICATION, "LO"),
        (SPS_ID, "SH"),
        (REQUESTED_CONTRAST_AGENT, "LO"),
        (SPS_COMMENTS, "LT"),
        (SPS_STATUS, "CS"),
        (SPS_END_DATE, "DA"),
        (SPS_END_TIME, "TM"),
        (SCHEDULED_PROTOCOL_CODE_SEQUENCE, _CODE_EXPANSION),
    ),
    SCHEDULED_PROTOCOL_CODE_SEQUENCE: _CODE_EXPANSION,
    REQUESTED_PROCEDURE_CODE_SEQUENCE: _CODE_EXPANSION,
    REFERENCED_STUDY_SEQUENCE: (
        (REFERENCED_SOP_CLASS_UID, "UI"),
        (REFERENCED_SOP_INSTANCE_UID, "UI"),
    ),
    REFERENCED_PATIENT_SEQUENCE: (
        (REFERENCED_SOP_CLASS_UID, "UI"),
        (REFERENCED_SOP_INSTANCE_UID, "UI"),
    ),
}


def is_matching_key(tag: BaseTag, parent: BaseTag | None) -> bool:
    """True if ``tag`` is a supported matching key inside ``parent`` (None = top level)."""
    return tag in MATCHING_KEY_TAGS.get(parent, frozenset())


def is_return_key(tag: BaseTag, parent: BaseTag | None) -> bool:
    """True if ``tag`` is a supported return key inside ``parent`` (None = top level)."""
    return tag in RETURN_KEY_TAGS.get(parent, frozenset())

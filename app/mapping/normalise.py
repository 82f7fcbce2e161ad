"""Customer identifiers -> SHA-256 lowercase hex, normalised the way TikTok matches them.

TikTok hashes its own copy of each identifier after the same normalisation, so a value normalised
differently here simply never matches. The rules (../shared/TIKTOK_EVENTS_API.md):
email trim+lowercase; phone E.164; external_id trim, case kept; first/last name trim+lowercase;
zip code trim, lowercase, no spaces.

A value that already is 64 hex characters is taken as hashed upstream and passed through lowercased:
hashing it again (a common peer-connector bug) makes it unmatchable.

Every `hash_*` accepts a string, a number (its string form), None, or a list of those, and returns
a hex string, a list of them (empties dropped), or None when nothing usable is left. Any other type
raises TypeError: the caller decides whether that refuses the event.
"""
from __future__ import annotations

import functools
import hashlib
import math
import re
from typing import Any, Callable

import phonenumbers

__all__ = [
    "is_sha256_hex", "e164", "hash_email", "hash_phone", "hash_external_id", "hash_first_name",
    "hash_last_name", "hash_zip_code",
]

_SHA256_HEX = re.compile(r"[0-9a-fA-F]{64}")
_WHITESPACE = re.compile(r"\s+")
_E164 = phonenumbers.PhoneNumberFormat.E164


def is_sha256_hex(s: object) -> bool:
    """True for exactly 64 hex characters (any case): a value already hashed upstream."""
    return isinstance(s, str) and len(s) == 64 and _SHA256_HEX.fullmatch(s) is not None


def _text(v: object) -> str | None:
    """The stripped string form of one scalar identifier; None when empty."""
    if isinstance(v, str):
        s = v.strip()
    elif v is None:
        return None
    elif isinstance(v, bool):
        raise TypeError(f"expected a string, got a boolean ({v!r})")
    elif isinstance(v, int):
        s = str(v)
    elif isinstance(v, float) and math.isfinite(v):
        # JSON decoders turn big integer IDs into floats; 1234.0 means the ID "1234".
        s = str(int(v)) if v.is_integer() else repr(v)
    else:
        raise TypeError(f"expected a string, got {type(v).__name__}")
    return s or None


def _sha256(s: str) -> str:
    return hashlib.sha256(s.encode()).hexdigest()


_Normaliser = Callable[[str, "str | None"], "str | None"]


def _hashed(v: object, normalise: _Normaliser, region: str | None = None) -> Any:
    """Apply one field's normalise-then-hash to a scalar or to each element of a list."""
    if isinstance(v, (list, tuple)):
        out = [h for h in (_hashed_one(x, normalise, region) for x in v) if h is not None]
        return out or None
    return _hashed_one(v, normalise, region)


def _hashed_one(v: object, normalise: _Normaliser, region: str | None) -> str | None:
    s = _text(v)
    if s is None:
        return None
    if is_sha256_hex(s):
        return s.lower()
    s = normalise(s, region)
    return _sha256(s) if s else None


def _lower(s: str, _region: str | None) -> str:
    return s.lower()


def _keep(s: str, _region: str | None) -> str:
    return s


def _zip(s: str, _region: str | None) -> str:
    return _WHITESPACE.sub("", s).lower()


def hash_email(v: object) -> str | list[str] | None:
    return _hashed(v, _lower)


def hash_external_id(v: object) -> str | list[str] | None:
    # Case is kept: an advertiser's user IDs may be case-sensitive (TikTok's example "user_123").
    return _hashed(v, _keep)


def hash_first_name(v: object) -> str | list[str] | None:
    return _hashed(v, _lower)


def hash_last_name(v: object) -> str | list[str] | None:
    return _hashed(v, _lower)


def hash_zip_code(v: object) -> str | list[str] | None:
    return _hashed(v, _zip)


# A customer's number comes back with each event of their funnel (checkout, payment, purchase),
# and phonenumbers' parse is the costliest step of a mapping (~30 µs) for the numbers the fast
# path below leaves to it. The cache lives in this process's memory only, like the events in flight.
@functools.lru_cache(maxsize=16384)
def e164(s: str, default_region: str | None) -> str | None:
    """`s` in E.164 (`+`, country code, no trunk 0, digits only), or None if it can't be one.

    Without a `+`/international prefix the number is read as national to `default_region`; with no
    region such a number is ambiguous (is "2133734253" US or Algerian?) and gives None rather
    than a guess. "Possible" (the right length for its country) is the bar, not "valid": validity
    depends on the metadata of the moment and refuses reserved ranges that real test traffic uses.
    A length possible only for local dialling (without the area code) is not enough.
    """
    plain = _plain_international(s)
    if plain is None and default_region is not None:
        plain = _plain_national(s, default_region)
    return plain if plain is not None else _parsed_e164(s, default_region)


_POSSIBLE = phonenumbers.ValidationResult.IS_POSSIBLE


def _parsed_e164(s: str, default_region: str | None) -> str | None:
    try:
        number = phonenumbers.parse(s, default_region)
    except phonenumbers.NumberParseException:
        return None
    # A length possible only for local dialling (no area code) is not a number TikTok can match.
    if phonenumbers.is_possible_number_with_reason(number) != _POSSIBLE:
        return None
    return phonenumbers.format_number(number, _E164)


# Most numbers arrive already international ("+44 7700 900000"): for those, E.164 is the digits
# once the country code is known and the rest has a possible length, and phonenumbers' full
# parse (3/4 of the cost of hashing a phone, 40-50 µs for a bracketed one) is not needed.
# Spaces, hyphens, dots and brackets ("+1 (213) 373-4253", TikTok's own "(+1)2133734253") are
# only punctuation; anything else — a trunk prefix (also a bracketed "(0)"), letters, a national
# number — still goes through phonenumbers; tests/test_normalise.py checks on numbers of every
# country code, in every such spelling, that both paths agree.
_PLAIN_INTERNATIONAL = re.compile(r"\+[1-9][0-9]{3,16}")


def _without_separators(s: str) -> str:
    # What s.translate() with a deletion table of " -.()" gives, in ~40% of its time.
    return s.replace(" ", "").replace("-", "").replace(".", "").replace("(", "").replace(")", "")


_NO_RULE = (None, frozenset())
_country_rules: dict[str, tuple[re.Pattern | None, frozenset[int]]] = {}


def _plain_international(s: str) -> str | None:
    """The E.164 form of a plainly written, possible international number; None: ask phonenumbers."""
    if "+" not in s:
        return None  # the common national spelling: no need to strip it first
    digits = _without_separators(s)
    if _PLAIN_INTERNATIONAL.fullmatch(digits) is None:
        return None
    for n in (1, 2, 3):  # country calling codes are prefix-free
        code = digits[1:1 + n]
        rule = _country_rules.get(code) or _country_rule(code)
        if rule is not _NO_RULE:
            break
    else:
        return None
    trunk, lengths = rule
    national = digits[1 + len(code):]
    if national[0] == "0" or len(national) not in lengths or (trunk and trunk.match(national)):
        return None  # a trunk prefix to strip, a leading zero to keep, or not possible: the full parse decides
    return digits


# A national number, with its trunk prefix ("07700 900123" in GB) or without ("2133734253" in
# the US), is the other common spelling:
# the region's country code plus the digits after the prefix, when the region's metadata makes
# that the whole story — what phonenumbers would strip is exactly the prefix (no carrier code,
# no transform rule), the number not starting
# like the region's international prefix (Israel's "014..." is a call abroad), a possible
# length, and the region's general number pattern. Everything else goes to phonenumbers;
# tests/test_normalise.py checks agreement under every supported region.
_region_rules: dict[str, tuple | None] = {}


def _plain_national(s: str, region: str) -> str | None:
    rule = _region_rules[region] if region in _region_rules else _region_rule(region)
    if rule is None:
        return None
    digits = _without_separators(s)
    prefix, parsing, code, lengths, pattern, international = rule
    if not digits.isdigit() or not digits.isascii() or (international is not None and international.match(digits)):
        return None
    stripped = parsing.match(digits)  # what phonenumbers strips: nothing, the plain prefix, or we don't know
    if stripped is not None and stripped.group(0) != prefix:
        return None
    national = digits if stripped is None else digits[len(prefix):]
    if not national or national[0] == "0" or len(national) not in lengths or not pattern.fullmatch(national):
        return None
    return "+" + code + national


def _region_rule(region: str) -> tuple | None:
    rule = None
    meta = phonenumbers.PhoneMetadata.metadata_for_region(region)
    if meta is not None and meta.general_desc is not None and meta.national_prefix and meta.country_code:
        parsing = re.compile(meta.national_prefix_for_parsing or re.escape(meta.national_prefix))
        if parsing.groups == 0 and meta.national_prefix_transform_rule is None:  # no carrier code to keep
            lengths = frozenset(meta.general_desc.possible_length or ())
            pattern = meta.general_desc.national_number_pattern
            if lengths and -1 not in lengths and pattern:
                international = re.compile(meta.international_prefix) if meta.international_prefix else None
                rule = (meta.national_prefix, parsing, str(meta.country_code), lengths, re.compile(pattern),
                        international)
    _region_rules[region] = rule
    return rule


def _country_rule(code: str) -> tuple[re.Pattern | None, frozenset[int]]:
    """What the fast path needs of one calling code's metadata, loaded once: the national prefix
    phonenumbers would strip, and the possible national lengths (not the local-only ones: a
    number without its area code is not E.164)."""
    rule = _NO_RULE
    if int(code) in phonenumbers.COUNTRY_CODE_TO_REGION_CODE:
        meta = phonenumbers.PhoneMetadata.metadata_for_region_or_calling_code(
            int(code), phonenumbers.region_code_for_country_code(int(code)))
        if meta is not None and meta.general_desc is not None:
            general = meta.general_desc
            lengths = frozenset(general.possible_length or ())
            if lengths and -1 not in lengths:
                trunk = meta.national_prefix_for_parsing
                rule = (re.compile(trunk) if trunk else None, lengths)
    _country_rules[code] = rule
    return rule


def hash_phone(v: object, default_region: str | None = None) -> str | list[str] | None:
    """SHA-256 of the E.164 form; numbers that can't be put in E.164 are left out (None)."""
    return _hashed(v, e164, default_region)

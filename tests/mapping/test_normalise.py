"""app.mapping.normalise: known input -> known hash, TikTok's own examples first."""
from __future__ import annotations

import hashlib
import random

import phonenumbers
import pytest
from phonenumbers import PhoneNumberFormat, PhoneNumberType

from app.mapping.normalise import (
    _parsed_e164,
    _plain_international,
    _plain_national,
    e164,
    hash_email,
    hash_external_id,
    hash_first_name,
    hash_last_name,
    hash_phone,
    hash_zip_code,
    is_sha256_hex,
)


def sha(s: str) -> str:
    return hashlib.sha256(s.encode()).hexdigest()


# ---- TikTok's examples (TIKTOK_EVENTS_API.md, "Normalisation before SHA-256")

def test_tiktok_example_email():
    assert hash_email(" ALICE_abc@gmail.com ") == (
        "848a771458438fc2ec420560d769fb9b9b86851ee338ec56517baabd79d3bb4f")


def test_tiktok_example_phone():
    assert e164("(+1)2133734253", None) == "+12133734253"
    assert hash_phone("(+1)2133734253") == (
        "9f7ec22d72092cd3c0b58726ed9c2d91b92e51a3f29837508fb2948bb22dd2fd")


def test_tiktok_example_external_id():
    assert hash_external_id("user_123") == (
        "80fba0ae1c48e3978e43e4efc365e14e12ea0c830ba8ba5b9a2dafc7e3f2ab8b")


# ---- already hashed: passed through lowercased, never hashed twice

HASHED = "848A771458438FC2EC420560D769FB9B9B86851EE338EC56517BAABD79D3BB4F"


@pytest.mark.parametrize("hasher", [hash_email, hash_phone, hash_external_id, hash_first_name,
                                    hash_last_name, hash_zip_code])
def test_prehashed_value_is_passed_through_lowercased(hasher):
    assert hasher(HASHED) == HASHED.lower()
    assert hasher(f"  {HASHED}\n") == HASHED.lower()
    assert hasher(HASHED.lower()) == HASHED.lower()
    assert hasher([HASHED]) == [HASHED.lower()]


def test_is_sha256_hex():
    assert is_sha256_hex(HASHED)
    assert is_sha256_hex(HASHED.lower())
    assert not is_sha256_hex(HASHED[:-1])
    assert not is_sha256_hex(HASHED + "0")
    assert not is_sha256_hex("g" * 64)
    assert not is_sha256_hex(f" {HASHED}")
    assert not is_sha256_hex(None)
    assert not is_sha256_hex(int("1" * 64))


def test_64_hex_digits_are_taken_as_hashed_even_as_a_phone():
    # The rule is mechanical: 64 hex chars never get hashed again, whatever they look like.
    assert hash_phone("1" * 64) == "1" * 64


# ---- phone: E.164

@pytest.mark.parametrize("raw, region, expected", [
    ("(+1)2133734253", None, "+12133734253"),
    ("+1 (213) 373-4253", None, "+12133734253"),
    ("tel:+1-213-373-4253", None, "+12133734253"),
    ("+44 (0) 7700-900123", None, "+447700900123"),    # the trunk 0 goes
    ("07700 900123", "GB", "+447700900123"),            # national number, default region
    ("0044 7700 900123", "GB", "+447700900123"),        # international dialling prefix
    ("447700900123", "GB", "+447700900123"),            # country code without "+"
    ("2133734253", "US", "+12133734253"),
    ("+44 7700 900123", "US", "+447700900123"),         # an explicit country code wins
    ("2133734253", None, None),                         # no country code and no region
    ("07700 900123", None, None),
    ("+1 555", None, None),                             # too short to be a number
    ("+134234325", None, None),                         # impossible length for +1
    ("call me maybe", "GB", None),
    ("", "GB", None),
])
def test_e164(raw, region, expected):
    assert e164(raw, region) == expected


def test_hash_phone_hashes_e164_form():
    assert hash_phone("07700 900123", "GB") == sha("+447700900123")
    assert hash_phone(" +44 7700 900123 ") == sha("+447700900123")
    assert hash_phone(447700900123, "GB") == sha("+447700900123")


def test_hash_phone_leaves_out_what_is_not_a_number():
    assert hash_phone("not a phone", "GB") is None
    assert hash_phone("2133734253") is None
    assert hash_phone(["2133734253", "+12133734253", "+1 555"]) == [sha("+12133734253")]
    assert hash_phone(["nope"], "GB") is None


def test_segment_style_phone_is_hashed_like_segment():
    # seg-tiktok-conversions-00: "+1555-555-5555" -> "+15555555555" (possible, if not assigned).
    assert hash_phone("+1555-555-5555") == (
        "910a625c4ba147b544e6bd2f267e130ae14c591b6ba9c25cb8573322dedbebd0")


# ---- the other fields

def test_email_trimmed_and_lowercased():
    assert hash_email("\tBob@Example.COM ") == sha("bob@example.com")


def test_external_id_keeps_case_and_stringifies_numbers():
    assert hash_external_id(" User_123 ") == sha("User_123")
    assert hash_external_id("User_123") != hash_external_id("user_123")
    assert hash_external_id(123) == sha("123")
    assert hash_external_id(123.0) == sha("123")  # a JSON decoder's float for an integer ID


def test_names_and_zip():
    assert hash_first_name(" Ada ") == sha("ada")
    assert hash_last_name("LOVELACE") == sha("lovelace")
    assert hash_zip_code(" SW1A 1AA ") == sha("sw1a1aa")
    assert hash_zip_code("94103") == sha("94103")


# ---- lists and empties

def test_lists_hash_each_and_drop_empties():
    assert hash_email(["A@x.com", "", None, "  ", "b@x.com"]) == [sha("a@x.com"), sha("b@x.com")]
    assert hash_external_id(("u1", 2)) == [sha("u1"), sha("2")]


@pytest.mark.parametrize("hasher", [hash_email, hash_phone, hash_external_id, hash_first_name,
                                    hash_last_name, hash_zip_code])
@pytest.mark.parametrize("empty", [None, "", "   ", [], ["", None]])
def test_empty_gives_none(hasher, empty):
    assert hasher(empty) is None


@pytest.mark.parametrize("bad", [{"email": "a@x.com"}, True, [["a@x.com"]], float("nan")])
def test_wrong_types_raise_type_error(bad):
    with pytest.raises(TypeError):
        hash_email(bad)


# ---- phone: the fast path for plainly written international numbers

def _international_numbers() -> list[str]:
    """Numbers under every calling code: national lengths 1-15, leading 0s and trunk prefixes,
    spaces and hyphens, and the shapes the fast path must leave alone."""
    rng = random.Random(164)
    out = []
    for code in sorted(phonenumbers.COUNTRY_CODE_TO_REGION_CODE):
        for length in range(1, 16):
            for _ in range(6):
                national = "".join(rng.choice("0123456789") for _ in range(length))
                if rng.random() < 0.3:
                    national = rng.choice(("0", "1", "8", "06", "180020")) + national[1:]
                sep = rng.choice(("", " ", "-"))
                grouped = sep.join(national[i:i + 3] for i in range(0, len(national), 3))
                out.append(f"+{code}{rng.choice(('', ' ', '-'))}{grouped}")
    return out + ["+44 (0)7700 900123", "+44 7700 900123 ext. 12", "+4４7700900123", "+44\u00a07700900123",
                  "++447700900123", "+0447700900123"]


def test_plain_international_numbers_come_out_as_phonenumbers_parses_them():
    numbers = _international_numbers()
    fast = [(n, _plain_international(n)) for n in numbers]
    taken = [(n, f) for n, f in fast if f is not None]
    for n, f in taken:
        assert f == _parsed_e164(n, None) == _parsed_e164(n, "GB"), n
    # Of the numbers phonenumbers accepts the fast path takes most (3,216 of 4,227 with
    # phonenumbers 9.0.43's metadata; a bound, since the metadata changes with every release),
    # and every odd shape is left to phonenumbers.
    accepted = [n for n in numbers if _parsed_e164(n, None) is not None]
    assert len(numbers) == 19356
    assert 0.6 * len(accepted) < len(taken) <= len(accepted)
    assert [f for _, f in fast[-6:]] == [None] * 6


def test_bracketed_and_dotted_international_numbers_agree_with_phonenumbers():
    rng = random.Random(165)
    numbers = []
    for code in sorted(phonenumbers.COUNTRY_CODE_TO_REGION_CODE):
        for length in range(4, 13):
            national = "".join(rng.choice("0123456789") for _ in range(length))
            if rng.random() < 0.3:
                national = rng.choice(("0", "1", "8", "06")) + national[1:]
            numbers += [f"+{code} ({national[:3]}) {national[3:6]}-{national[6:]}",
                        f"(+{code}){national}", f"+{code}.{national[:3]}.{national[3:]}",
                        f"+{code} (0) {national}"]
    taken = [(n, f) for n, f in ((n, _plain_international(n)) for n in numbers) if f is not None]
    for n, f in taken:
        assert f == _parsed_e164(n, None) == _parsed_e164(n, "GB"), n
    # The fast path takes most of these shapes that phonenumbers accepts (bar the "(0)" ones).
    accepted = [n for n in numbers if "(0)" not in n and _parsed_e164(n, None) is not None]
    assert 0.6 * len(accepted) < len(taken) <= len(accepted)
    assert not any("(0)" in n for n, _ in taken)  # a bracketed trunk prefix is phonenumbers' to strip
    assert _plain_international("+1 (213) 373-4253") == _plain_international("(+1)2133734253") == "+12133734253"


def test_national_numbers_with_their_trunk_prefix_agree_with_phonenumbers_in_every_region():
    rng = random.Random(166)
    numbers, examples = [], []
    for region in sorted(phonenumbers.SUPPORTED_REGIONS):
        for length in range(4, 14):
            for _ in range(2):
                national = "".join(rng.choice("0123456789") for _ in range(length))
                numbers += [(region, s) for s in ("0" + national, f"0{national[:4]} {national[4:]}",
                                                  f"(0{national[:3]}) {national[3:]}", national, "00" + national)]
        for kind in (PhoneNumberType.MOBILE, PhoneNumberType.FIXED_LINE, PhoneNumberType.TOLL_FREE):
            example = phonenumbers.example_number_for_type(region, kind)
            if example is not None:
                examples.append((region, phonenumbers.format_number(example, PhoneNumberFormat.NATIONAL)))
    taken = [(r, s, f) for r, s in numbers + examples if (f := _plain_national(s, r)) is not None]
    for region, s, f in taken:
        assert f == _parsed_e164(s, region), (region, s)
    assert sum(1 for r, s in examples if _plain_national(s, r)) > len(examples) / 3
    assert _plain_national("07700 900123", "GB") == "+447700900123"
    assert _plain_national("01465 86833888", "IL") is None  # "014" dials abroad from Israel
    assert _plain_national("06 1234 5678", "IT") is None  # Italy keeps its leading 0: phonenumbers
    assert e164("07700 900123", "GB") == "+447700900123"
    assert _plain_national("(213) 373-4253", "US") == "+12133734253"


def test_e164_takes_the_fast_path_only_where_it_agrees():
    assert _plain_international("+44 7700 900123") == "+447700900123"
    assert _plain_international("+44 07700 900123") is None  # trunk 0: phonenumbers strips it
    assert e164("+44 07700 900123", None) == "+447700900123"
    assert _plain_international("+39 06 1234 5678") is None  # Italy keeps its leading 0
    assert e164("+39 06 1234 5678", None) == "+390612345678"
    assert _plain_international("+1 555") is None and e164("+1 555", None) is None


@pytest.mark.parametrize("raw, region", [("+12345432", None), ("+1 234-5432", None), ("234 5432", "US")])
def test_a_number_possible_only_for_local_dialling_is_not_e164(raw, region):
    # 7 digits after +1 is dialled without its area code: TikTok could never match its hash.
    assert e164(raw, region) is None
    assert hash_phone(raw, region) is None
    assert e164("+1 212 234 5432", None) == "+12122345432"  # the same number with its area code

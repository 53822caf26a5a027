import pytest
import yaml

import boards
from boards import list_boards, load_board
from flows.errors import ConfigError

# docs/boards.md (FINN's part map, vendor resource data): part, LUT, FF, BRAM36, DSP, AXI HP width
EXPECTED = {
    "pynq-z1": ("xc7z020clg400-1", 53200, 106400, 140, 220, 64),
    "pynq-z2": ("xc7z020clg400-1", 53200, 106400, 140, 220, 64),
    "ultra96-v2": ("xczu3eg-sbva484-1-i", 70560, 141120, 216, 360, 128),
    "zcu104": ("xczu7ev-ffvc1156-2-e", 230400, 460800, 312, 1728, 128),
    "kv260": ("xck26-sfvc784-2LV-c", 117120, 234240, 144, 1248, 128),
}


def test_known_boards_are_listed():
    assert list_boards() == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_board_data(name):
    b = load_board(name)
    assert (b.part, b.luts, b.ffs, b.bram36, b.dsps, b.axi_width_bits) == EXPECTED[name]
    assert b.capacity()["BRAM_18K"] == 2 * b.bram36
    assert b.axi_bytes_per_cycle == b.axi_width_bits // 8


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_board_part_matches_finn(name):
    from finn.util.basic import pynq_part_map

    b = load_board(name)
    assert pynq_part_map[b.finn_board] == b.part


def test_unknown_board_lists_known_ones():
    with pytest.raises(ConfigError) as err:
        load_board("zedboard")
    assert "zedboard" in str(err.value) and "pynq-z2" in str(err.value)


def test_board_file_with_missing_field_is_refused(tmp_path, monkeypatch):
    data = yaml.safe_load((boards.BOARD_DIR / "pynq-z2.yaml").read_text())
    del data["dsps"]
    (tmp_path / "broken.yaml").write_text(yaml.safe_dump({**data, "name": "broken"}))
    monkeypatch.setattr(boards, "BOARD_DIR", tmp_path)
    with pytest.raises(ConfigError, match="dsps"):
        load_board("broken")

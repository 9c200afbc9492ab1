"""`--vis` labels (not the model's markers): ID tabs never overlap, never hide under another box, and neighbouring
IDs get clearly different colours."""

from __future__ import annotations

import colorsys

import numpy as np

from stvgr1_edge.render import draw_tracks, id_colour, place_label


def _overlap(a, b) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def test_tabs_of_side_by_side_boxes_do_not_touch():
    taken = [place_label((100, 100, 110, 160), 30, 20, [], 640, 480)]
    second = place_label((112, 100, 130, 160), 30, 20, taken, 640, 480)  # its usual spot overlaps the first tab
    assert not _overlap(second, (taken[0][0] - 1, taken[0][1] - 1, taken[0][2] + 1, taken[0][3] + 1))
    assert all(0 <= v for v in second) and second[2] <= 640 and second[3] <= 480


def test_many_boxes_in_one_spot_get_separate_tabs():
    tabs: list[tuple[int, int, int, int]] = []
    for i in range(12):
        tabs.append(place_label((200 + i, 200, 240 + i, 300), 24, 16, tabs, 640, 480))
    assert not any(_overlap(a, b) for i, a in enumerate(tabs) for b in tabs[i + 1 :])


def test_a_tab_is_drawn_over_other_boxes_and_outlined():
    frame = np.full((200, 300, 3), 128, np.uint8)
    # box 5's top edge runs right through where box 4's tab goes
    out = draw_tracks(frame, [(4, [50, 60, 90, 150], None), (5, [30, 50, 200, 120], None)])
    tab_colour = np.array(id_colour(4))
    box5 = np.array(id_colour(5))
    region = out[40:61, 50:66]
    assert (region == tab_colour).all(axis=2).sum() > 40  # the tab is there, above box 4, on top of box 5's edge
    assert not (out[50, 52:60] == box5).all(axis=1).any()  # box 5's top edge (row 50) does not cross the tab
    assert ((out == 0).all(axis=2)).sum() > 0  # dark outline and digits


def test_consecutive_ids_have_well_separated_hues():
    def hue(i: int) -> float:
        r, g, b = (c / 255 for c in id_colour(i))
        return colorsys.rgb_to_hsv(r, g, b)[0]

    for i in range(1, 60):
        d = abs(hue(i) - hue(i + 1))
        assert min(d, 1 - d) > 0.2, i

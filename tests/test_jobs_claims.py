"""How many runs of a group one claim takes (the rest of claiming is the store contract suite's)."""

import pytest

from jobs.claims import fused_share


@pytest.mark.parametrize("waiting, free_slots, fuse_max, share", [
    (6, 2, 8, 3),  # 3 + 3 on two free slots, not 6 + 0
    (3, 2, 8, 2),  # then 1 on the other slot
    (6, 1, 8, 6),
    (20, 1, 8, 8),  # never more than GCE_LAB_FUSE_MAX
    (20, 2, 8, 8),
    (6, 4, 8, 2),
    (6, 8, 8, 1),  # more free slots than runs: one each
    (6, 2, 1, 1),  # fusing off
    (6, 2, 0, 1),
    (1, 1, 8, 1),
    (5, 0, 8, 5),  # no slot counted free: as if one
])  # fmt: skip
def test_a_claim_takes_an_equal_share_of_the_free_slots_at_most_fuse_max(
    waiting, free_slots, fuse_max, share
):
    assert fused_share(waiting, free_slots, fuse_max) == share


def test_successive_claims_on_the_free_slots_take_every_run():
    waiting, free, shares = 7, 3, []
    while waiting:
        shares.append(fused_share(waiting, free, 8))
        waiting, free = waiting - shares[-1], max(1, free - 1)
    assert shares == [3, 2, 2]

from cse.digest import differences, fingerprint


def test_differences_lists_changed_leaves_by_dotted_key():
    old = {"sampler": "DPS(zeta=1.0)", "data": {"image_size": 16, "count": 200}, "steps": [1, 2]}
    new = {"sampler": "DPS(zeta=2.0)", "data": {"image_size": 16, "count": 100}, "steps": [1, 2], "extra": 3}
    assert differences(old, new) == (
        "data.count: 200 -> 100; extra: None -> 3; sampler: DPS(zeta=1.0) -> DPS(zeta=2.0)"
    )
    assert differences(old, new, ignore={"extra", "sampler"}) == "data.count: 200 -> 100"
    assert differences(old, old) == "" and fingerprint(old) == fingerprint(dict(reversed(old.items())))
    assert fingerprint(old) != fingerprint(new)


def test_differences_shows_the_first_few_then_a_count():
    old, new = {f"k{i}": i for i in range(5)}, {f"k{i}": -i - 1 for i in range(5)}
    assert differences(old, new, shown=2) == "k0: 0 -> -1; k1: 1 -> -2; and 3 more"

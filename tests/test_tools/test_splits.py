# Copyright (c) mmseg_u2pl contributors. All rights reserved.
import hashlib
import math
import os
import os.path as osp
import random
from fractions import Fraction

import numpy as np
import pytest
from convert_u2pl_splits import (convert_u2pl_entry, convert_u2pl_list,
                                 convert_u2pl_split, find_u2pl_splits,
                                 published_setting)
from make_splits import (class_image_frequency, format_class_frequency,
                         load_class_presence, make_split)
from PIL import Image
from split_utils import (check_split, check_trainid_labels, num_from_fraction,
                         parse_fraction, read_split_list, write_split_list)

PUBLISHED = '/work/shared/data/u2pl-splits'
needs_published = pytest.mark.skipif(
    not osp.isdir(PUBLISHED),
    reason=f'published U2PL split lists not found at {PUBLISHED}')

CITY_A = 'leftImg8bit/train/aachen/aachen_000000_000019_leftImg8bit.png'
CITY_B = 'leftImg8bit/train/bochum/bochum_000000_000313_leftImg8bit.png'
CITY_C = 'leftImg8bit/train/aachen/aachen_000001_000019_leftImg8bit.png'


def write_text(path, text):
    os.makedirs(osp.dirname(str(path)), exist_ok=True)
    with open(path, 'w', newline='') as f:
        f.write(text)
    return str(path)


def write_label(path, array):
    os.makedirs(osp.dirname(str(path)), exist_ok=True)
    Image.fromarray(np.asarray(array, dtype=np.uint8)).save(path)
    return str(path)


# ---------------------------------------------------------------------------
# read / write
# ---------------------------------------------------------------------------
def test_read_split_list_blank_lines_crlf_no_final_newline(tmp_path):
    path = write_text(tmp_path / 'a.txt',
                      '2007_000033\r\n\n  2007_000042 \n\n2007_000061')
    assert read_split_list(path) == [
        '2007_000033', '2007_000042', '2007_000061'
    ]


def test_read_split_list_duplicate_names_both_lines(tmp_path):
    path = write_text(tmp_path / 'dup.txt',
                      'train_00000\ntrain_00001\n\ntrain_00000\n')
    with pytest.raises(ValueError) as err:
        read_split_list(path)
    msg = str(err.value)
    assert 'dup.txt' in msg and "'train_00000'" in msg
    assert 'line 1' in msg and 'line 4' in msg


def test_read_split_list_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match='nope.txt'):
        read_split_list(tmp_path / 'nope.txt')


def test_write_split_list_roundtrip(tmp_path):
    path = tmp_path / 'deep' / 'dir' / 'labeled.txt'
    names = ['aachen/aachen_000000_000019', 'train_00001']
    write_split_list(path, names)
    with open(path) as f:
        assert f.read() == 'aachen/aachen_000000_000019\ntrain_00001\n'
    assert read_split_list(path) == names


@pytest.mark.parametrize('bad', [['a', ''], ['a', ' b'], ['a\nb'], ['a', 'a']])
def test_write_split_list_rejects_unreadable_entries(tmp_path, bad):
    with pytest.raises(ValueError):
        write_split_list(tmp_path / 'x.txt', bad)
    assert not osp.exists(tmp_path / 'x.txt')


# ---------------------------------------------------------------------------
# conversion
# ---------------------------------------------------------------------------
@pytest.mark.parametrize('line, expected', [
    ('2007_000033', '2007_000033'),
    (' 2011_003276\n', '2011_003276'),
    ('JPEGImages/2007_000033.jpg', '2007_000033'),
    ('/VOCdevkit/VOC2012/JPEGImages/2008_000002.jpg', '2008_000002'),
    ('/JPEGImages/2007_000032.jpg /SegmentationClassAug/2007_000032.png',
     '2007_000032'),
])
def test_convert_u2pl_entry_voc(line, expected):
    assert convert_u2pl_entry(line, 'voc') == expected


@pytest.mark.parametrize('line', [
    '2007_00003', 'JPEGImages/2007_000033.png', 'foo',
    'JPEGImages/2007_000032.jpg SegmentationClassAug/2007_000099.png'
])
def test_convert_u2pl_entry_voc_malformed(line):
    with pytest.raises(ValueError, match='2007_000033'):
        convert_u2pl_entry(line, 'voc')


def test_convert_u2pl_entry_cityscapes():
    assert convert_u2pl_entry(CITY_A, 'cityscapes') == \
        'aachen/aachen_000000_000019'
    # already converted entries are kept
    assert convert_u2pl_entry('bochum/bochum_000000_000313',
                              'cityscapes') == 'bochum/bochum_000000_000313'
    val = 'leftImg8bit/val/frankfurt/frankfurt_000001_062250_leftImg8bit.png'
    assert convert_u2pl_entry(val, 'cityscapes', subset='val') == \
        'frankfurt/frankfurt_000001_062250'
    with pytest.raises(ValueError, match='leftImg8bit/train'):
        convert_u2pl_entry(val, 'cityscapes', subset='train')


@pytest.mark.parametrize('line', [
    '2007_000033',
    'leftImg8bit/train/aachen/bochum_000000_000019_leftImg8bit.png',
    'leftImg8bit/train/aachen/aachen_000000_000019_gtFine_labelIds.png',
])
def test_convert_u2pl_entry_cityscapes_malformed(line):
    with pytest.raises(ValueError, match='<city>'):
        convert_u2pl_entry(line, 'cityscapes')


def test_convert_u2pl_entry_unknown_dataset():
    with pytest.raises(ValueError, match='cityscapes'):
        convert_u2pl_entry('2007_000033', 'pascal')


def test_convert_u2pl_split_cityscapes_keeps_order(tmp_path):
    src = tmp_path / 'src'
    # labeled.txt without final newline, unlabeled.txt with a blank line
    write_text(src / 'labeled.txt', f'{CITY_B}\n{CITY_A}')
    write_text(src / 'unlabeled.txt', f'\n{CITY_C}\n\n')
    result = convert_u2pl_split(src, 'cityscapes', tmp_path / 'out')
    with open(tmp_path / 'out' / 'labeled.txt') as f:
        assert f.read() == ('bochum/bochum_000000_000313\n'
                            'aachen/aachen_000000_000019\n')
    with open(tmp_path / 'out' / 'unlabeled.txt') as f:
        assert f.read() == 'aachen/aachen_000001_000019\n'
    assert result['num_labeled'] == 2 and result['num_unlabeled'] == 1
    assert result['labeled'] == [
        'bochum/bochum_000000_000313', 'aachen/aachen_000000_000019'
    ]


def test_convert_u2pl_split_voc_files(tmp_path):
    lab = write_text(tmp_path / 'l.txt', '2007_000033\nJPEGImages/'
                     '2007_000042.jpg')
    unl = write_text(tmp_path / 'u.txt', '2007_000061\n')
    result = convert_u2pl_split([lab, unl], 'voc', tmp_path / 'o')
    assert read_split_list(tmp_path / 'o' /
                           'labeled.txt') == ['2007_000033', '2007_000042']
    assert result['unlabeled'] == ['2007_000061']


def test_convert_malformed_line_names_file_and_line(tmp_path):
    src = tmp_path / 'src'
    write_text(src / 'labeled.txt', f'{CITY_A}\n\n{CITY_B}\nfoo.png\n')
    write_text(src / 'unlabeled.txt', f'{CITY_C}\n')
    with pytest.raises(ValueError) as err:
        convert_u2pl_split(src, 'cityscapes', tmp_path / 'out')
    msg = str(err.value)
    assert 'labeled.txt' in msg and 'line 4' in msg and "'foo.png'" in msg
    assert 'leftImg8bit/train/<city>/' in msg  # the expected format
    assert not osp.exists(tmp_path / 'out' / 'labeled.txt')


def test_convert_rejects_entries_equal_after_conversion(tmp_path):
    path = write_text(tmp_path / 'l.txt',
                      '2007_000033\nJPEGImages/2007_000033.jpg\n')
    with pytest.raises(ValueError, match='lines 1 and 2'):
        convert_u2pl_list(path, 'voc')


def test_convert_overlap_names_entries_and_lines(tmp_path):
    src = tmp_path / 'src'
    write_text(src / 'labeled.txt', f'{CITY_A}\n{CITY_B}\n')
    write_text(src / 'unlabeled.txt', f'{CITY_C}\n\n{CITY_B}')
    with pytest.raises(ValueError) as err:
        convert_u2pl_split(src, 'cityscapes', tmp_path / 'out')
    msg = str(err.value)
    assert "'bochum/bochum_000000_000313'" in msg
    assert 'labeled.txt' in msg and 'line 2' in msg
    assert 'unlabeled.txt' in msg and 'line 3' in msg
    assert "'aachen/aachen_000000_000019'" not in msg


def make_cityscapes_root(root, entries, label_value=7):
    for entry in entries:
        city, name = entry.split('/')
        write_text(
            osp.join(root, 'leftImg8bit', 'train', city,
                     f'{name}_leftImg8bit.png'), 'x')
        write_label(
            osp.join(root, 'gtFine', 'train', city,
                     f'{name}_gtFine_labelTrainIds.png'),
            [[0, label_value], [255, 18]])


def test_convert_with_data_root(tmp_path):
    src = tmp_path / 'src'
    write_text(src / 'labeled.txt', f'{CITY_A}\n{CITY_B}\n')
    write_text(src / 'unlabeled.txt', f'{CITY_C}\n')
    root = str(tmp_path / 'cityscapes')
    entries = [
        'aachen/aachen_000000_000019', 'bochum/bochum_000000_000313',
        'aachen/aachen_000001_000019'
    ]
    make_cityscapes_root(root, entries)
    result = convert_u2pl_split(
        src, 'cityscapes', tmp_path / 'out', data_root=root)
    assert result['num_labeled'] == 2

    # an unlabeled image goes missing
    missing = osp.join(root, 'leftImg8bit', 'train', 'aachen',
                       'aachen_000001_000019_leftImg8bit.png')
    os.remove(missing)
    with pytest.raises(FileNotFoundError) as err:
        convert_u2pl_split(
            src, 'cityscapes', tmp_path / 'out2', data_root=root)
    msg = str(err.value)
    assert 'unlabeled.txt' in msg and 'line 1' in msg and missing in msg

    # labeled label maps with raw label ids (up to 33)
    make_cityscapes_root(root, entries, label_value=33)
    with pytest.raises(ValueError) as err:
        convert_u2pl_split(
            src, 'cityscapes', tmp_path / 'out3', data_root=root)
    msg = str(err.value)
    assert 'aachen_000000_000019_gtFine_labelTrainIds.png' in msg
    assert '[33]' in msg
    assert 'tools/dataset_converters/cityscapes.py' in msg


def test_find_u2pl_splits_numeric_order(tmp_path):
    for name in ['1464', '92', '183', 'extra']:
        write_text(tmp_path / name / 'labeled.txt', '')
        write_text(tmp_path / name / 'unlabeled.txt', '')
    write_text(tmp_path / 'half' / 'labeled.txt', '')  # no unlabeled.txt
    assert list(find_u2pl_splits(tmp_path)) == ['92', '183', '1464', 'extra']


def test_published_setting():
    assert published_setting('voc', 92) == 'classic 1/16'
    assert published_setting('voc', 5291) == 'blender 1/2'
    assert published_setting('cityscapes', 744) == '1/4'
    assert published_setting('cityscapes', 92) is None


# ---------------------------------------------------------------------------
# check_split
# ---------------------------------------------------------------------------
def test_check_split_counts(tmp_path):
    lab = write_text(tmp_path / 'l.txt', 'a\nb\n')
    unl = write_text(tmp_path / 'u.txt', 'c\nd\ne')
    counts = check_split(lab, unl, num_labeled=2, num_unlabeled=3, num_total=5)
    assert counts == dict(num_labeled=2, num_unlabeled=3, num_total=5)
    with pytest.raises(ValueError, match='expected num_total=6, found 5'):
        check_split(lab, unl, num_total=6)
    with pytest.raises(ValueError, match='num_labeled=3'):
        check_split(lab, unl, num_labeled=3)


def test_check_split_in_memory_overlap():
    with pytest.raises(ValueError) as err:
        check_split(['a', 'b', 'c'], ['d', 'c', 'b'])
    msg = str(err.value)
    assert 'share 2 entries' in msg
    # labeled line 2 / unlabeled line 3 for 'b'; 3 / 2 for 'c'
    assert "'b' (" in msg and 'line 2' in msg and 'line 3' in msg
    assert check_split(['a'], ['b'])['num_total'] == 2


def test_check_split_missing_image_and_label(tmp_path):
    root = tmp_path / 'VOC2012'
    for name in ['2007_000033', '2007_000042', '2007_000061']:
        write_text(root / 'JPEGImages' / f'{name}.jpg', 'x')
    write_label(root / 'SegmentationClassAug' / '2007_000033.png', [[0]])
    lab = write_text(tmp_path / 'labeled.txt', '2007_000033\n')
    unl = write_text(tmp_path / 'unlabeled.txt',
                     '2007_000042\n\n2007_000061\n2007_000099')
    kwargs = dict(
        data_root=str(root), img_path='JPEGImages', img_suffix='.jpg')
    with pytest.raises(FileNotFoundError) as err:
        check_split(lab, unl, **kwargs)
    msg = str(err.value)
    expected_path = osp.join(str(root), 'JPEGImages', '2007_000099.jpg')
    assert 'unlabeled.txt' in msg and 'line 4' in msg
    assert expected_path in msg and '1 of 3' in msg

    write_text(root / 'JPEGImages' / '2007_000099.jpg', 'x')
    assert check_split(lab, unl, **kwargs)['num_unlabeled'] == 3
    # label maps are only needed for labeled entries
    lab2 = write_text(tmp_path / 'labeled2.txt', '2007_000033\n2007_000061')
    unl2 = write_text(tmp_path / 'unlabeled2.txt', '2007_000042\n')
    with pytest.raises(FileNotFoundError) as err:
        check_split(
            lab2,
            unl2,
            seg_map_path='SegmentationClassAug',
            seg_map_suffix='.png',
            **kwargs)
    msg = str(err.value)
    assert 'labeled2.txt' in msg and 'line 2' in msg
    assert osp.join('SegmentationClassAug', '2007_000061.png') in msg


def test_check_trainid_labels(tmp_path):
    good = write_label(tmp_path / 'good.png', [[0, 18], [255, 3]])
    check_trainid_labels([good])
    raw = write_label(tmp_path / 'raw_labelIds.png', [[7, 33], [26, 0]])
    with pytest.raises(ValueError) as err:
        check_trainid_labels([good, raw])
    msg = str(err.value)
    assert 'raw_labelIds.png' in msg and '[26, 33]' in msg
    assert 'tools/dataset_converters/cityscapes.py' in msg
    assert '_labelTrainIds.png' in msg
    edge = write_label(tmp_path / 'edge.png', [[19]])
    with pytest.raises(ValueError, match=r'\[19\]'):
        check_trainid_labels([edge])
    with pytest.raises(FileNotFoundError, match='absent.png'):
        check_trainid_labels([tmp_path / 'absent.png'])


def test_check_trainid_labels_rejects_colour_maps(tmp_path):
    rgb = tmp_path / 'rgb.png'
    Image.fromarray(np.zeros((2, 2, 3), np.uint8)).save(rgb)
    with pytest.raises(ValueError, match='single-channel'):
        check_trainid_labels([rgb])


# ---------------------------------------------------------------------------
# make_split
# ---------------------------------------------------------------------------
NAMES = [f'train_{i:05d}' for i in range(40)]


def test_make_split_exact_counts_disjoint_union_order():
    labeled, unlabeled = make_split(NAMES, num_labeled=7, seed=3)
    assert len(labeled) == 7 and len(unlabeled) == 33
    assert not set(labeled) & set(unlabeled)
    assert set(labeled) | set(unlabeled) == set(NAMES)
    assert labeled == sorted(labeled, key=NAMES.index)
    assert unlabeled == sorted(unlabeled, key=NAMES.index)


def test_make_split_is_the_documented_hash_draw():
    # Recompute the documented rule independently: the k names with the
    # smallest sha256('<seed>/<attempt>/<name>') form the labeled set.
    key = lambda n: hashlib.sha256(f'5/0/{n}'.encode()).digest()  # noqa
    expected = set(sorted(NAMES, key=key)[:6])
    labeled, _ = make_split(NAMES, num_labeled=6, seed=5)
    assert set(labeled) == expected


def test_make_split_determinism_and_seed():
    first = make_split(NAMES, num_labeled=10, seed=0)
    assert make_split(NAMES, num_labeled=10, seed=0) == first
    assert make_split(NAMES, num_labeled=10, seed=1)[0] != first[0]
    # depends on the set of names, not their order
    shuffled = list(NAMES)
    random.Random(0).shuffle(shuffled)
    assert set(make_split(shuffled, num_labeled=10,
                          seed=0)[0]) == set(first[0])


def test_fraction_parsing_and_rounding():
    assert parse_fraction('1/16') == Fraction(1, 16)
    assert parse_fraction('0.0625') == Fraction(1, 16)
    assert parse_fraction(0.0625) == Fraction(1, 16)
    assert parse_fraction(0.1) == Fraction(1, 10)
    # rounding up reproduces every published count
    for total, expected in [(10582, [662, 1323, 2646, 5291]),
                            (2975, [186, 372, 744, 1488]),
                            (1464, [92, 183, 366, 732])]:
        assert [num_from_fraction(total, f'1/{d}')
                for d in (16, 8, 4, 2)] == expected
    for bad in ['0', '1.5', '-1/16', 'abc', '1/0', 0.0]:
        with pytest.raises(ValueError, match='fraction'):
            parse_fraction(bad)


def test_fraction_in_split_file_form():
    # the form of split file names, labeled_1-16.txt
    assert parse_fraction('1-16') == Fraction(1, 16)
    assert num_from_fraction(10582, '1-16') == 662
    for bad in ['1-0', '2-1', '-1-16', '1-16-2']:
        with pytest.raises(ValueError, match='fraction'):
            parse_fraction(bad)


def test_make_split_fraction_equals_num_labeled():
    names = [f'{i:06d}' for i in range(100)]
    by_fraction = make_split(names, fraction='1/16', seed=2)
    assert len(by_fraction[0]) == math.ceil(100 / 16) == 7
    assert make_split(names, fraction=0.0625, seed=2) == by_fraction
    assert make_split(names, num_labeled=7, seed=2) == by_fraction


@pytest.mark.parametrize('kwargs', [
    dict(),
    dict(num_labeled=3, fraction='1/2'),
    dict(num_labeled=0),
    dict(num_labeled=41),
    dict(num_labeled=2.0),
    dict(fraction='3/2'),
    dict(num_labeled=3, seed='0'),
])
def test_make_split_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        make_split(NAMES, **kwargs)


def test_make_split_rejects_duplicate_names():
    with pytest.raises(ValueError, match='train_00001'):
        make_split(NAMES + ['train_00001'], num_labeled=2)


def rare_class_presence():
    """20 images; class 0 everywhere, 1 in even images, 2 only in #13."""
    presence = np.zeros((20, 3), dtype=bool)
    presence[:, 0] = True
    presence[::2, 1] = True
    presence[13, 2] = True
    return presence


def test_make_split_require_all_classes():
    names = NAMES[:20]
    presence = rare_class_presence()
    # find a seed whose plain draw misses the rare class 2
    seed = next(
        s for s in range(100)
        if 'train_00013' not in make_split(names, num_labeled=3, seed=s)[0])
    plain, _ = make_split(names, num_labeled=3, seed=seed)
    labeled, unlabeled = make_split(
        names,
        num_labeled=3,
        seed=seed,
        class_presence=presence,
        require_all_classes=True)
    assert len(labeled) == 3 and 'train_00013' in labeled
    assert any(names.index(n) % 2 == 0 for n in labeled)  # class 1
    assert set(labeled) | set(unlabeled) == set(names)
    assert make_split(
        names,
        num_labeled=3,
        seed=seed,
        class_presence=presence,
        require_all_classes=True)[0] == labeled
    # a seed whose plain draw already covers all classes is unchanged
    good = next(
        s for s in range(200) if
        'train_00013' in make_split(names, num_labeled=3, seed=s)[0] and any(
            names.index(n) % 2 == 0
            for n in make_split(names, num_labeled=3, seed=s)[0]))
    assert make_split(
        names,
        num_labeled=3,
        seed=good,
        class_presence=presence,
        require_all_classes=True) == make_split(
            names, num_labeled=3, seed=good)


def test_make_split_require_all_classes_gives_up():
    names = NAMES[:20]
    presence = rare_class_presence()
    seed = next(
        s for s in range(100)
        if 'train_00013' not in make_split(names, num_labeled=3, seed=s)[0])
    with pytest.raises(RuntimeError) as err:
        make_split(
            names,
            num_labeled=3,
            seed=seed,
            class_presence=presence,
            require_all_classes=True,
            max_tries=1)
    assert 'class 2 in 1 draws' in str(err.value)
    absent = presence.copy()
    absent[13, 2] = False
    with pytest.raises(ValueError, match=r'classes \[2\] occur in no image'):
        make_split(
            names,
            num_labeled=3,
            class_presence=absent,
            require_all_classes=True)
    with pytest.raises(ValueError, match='require_all_classes needs'):
        make_split(names, num_labeled=3, require_all_classes=True)


def test_make_split_with_label_paths(tmp_path):
    names = ['img_a', 'img_b', 'img_c', 'img_d']
    labels = [[[0, 0]], [[0, 255]], [[1, 0]], [[0, 2]]]
    paths = {
        n: write_label(tmp_path / f'{n}.png', lab)
        for n, lab in zip(names, labels)
    }
    # every class only appears once: 1 in img_c, 2 in img_d
    labeled, _ = make_split(
        names,
        num_labeled=2,
        label_paths=paths,
        num_classes=3,
        require_all_classes=True)
    assert labeled == ['img_c', 'img_d']
    # same with a list of paths in name order
    assert make_split(
        names,
        num_labeled=2,
        label_paths=[paths[n] for n in names],
        num_classes=3,
        require_all_classes=True)[0] == labeled
    with pytest.raises(ValueError, match='num_classes is needed'):
        make_split(names, num_labeled=2, label_paths=paths)


def test_load_class_presence_and_frequency(tmp_path):
    paths = [
        write_label(tmp_path / 'a.png', [[0, 255], [2, 2]]),
        write_label(tmp_path / 'b.png', [[255, 255]]),
        write_label(tmp_path / 'c.png', [[2, 1]]),
    ]
    presence = load_class_presence(paths, num_classes=4)
    np.testing.assert_array_equal(presence,
                                  [[1, 0, 1, 0], [0, 0, 0, 0], [0, 1, 1, 0]])
    np.testing.assert_array_equal(
        class_image_frequency(presence), [1, 1, 2, 0])
    np.testing.assert_array_equal(
        class_image_frequency(presence, np.array([True, True, False])),
        [1, 0, 1, 0])
    with pytest.raises(ValueError) as err:
        load_class_presence(paths, num_classes=2)
    assert 'a.png' in str(err.value) and '[2]' in str(err.value)


def test_format_class_frequency():
    table = format_class_frequency([1, 0], [4, 2],
                                   2,
                                   8,
                                   class_names=['road', 'sidewalk'])
    lines = table.splitlines()
    assert len(lines) == 3
    assert lines[1].split()[:5] == ['road', '1', '50.0', '4', '50.0']
    assert lines[2].split()[:5] == ['sidewalk', '0', '0.0', '2', '25.0']
    assert 'missing' in lines[2] and 'missing' not in lines[1]


# ---------------------------------------------------------------------------
# the published U2PL lists
# ---------------------------------------------------------------------------
VOC_CLASSIC = [92, 183, 366, 732, 1464]
VOC_BLENDER = [662, 1323, 2646, 5291]
CITY_COUNTS = [186, 372, 744, 1488]


def convert_all(dataset, folder, out_dir):
    splits = find_u2pl_splits(osp.join(PUBLISHED, folder))
    return {
        int(name): convert_u2pl_split(src, dataset, osp.join(out_dir, name))
        for name, src in splits.items()
    }


@needs_published
def test_published_voc_splits(tmp_path):
    results = convert_all('voc', 'pascal', str(tmp_path))
    assert sorted(results) == sorted(VOC_CLASSIC + VOC_BLENDER)
    train = None
    for count, result in results.items():
        labeled, unlabeled = result['labeled'], result['unlabeled']
        assert len(labeled) == count
        assert len(labeled) + len(unlabeled) == 10582
        assert not set(labeled) & set(unlabeled)
        union = set(labeled) | set(unlabeled)
        assert train is None or union == train  # one training set
        train = union
        # converted files: same entries, same (published) order
        out = osp.join(str(tmp_path), str(count))
        assert read_split_list(osp.join(out, 'labeled.txt')) == \
            read_split_list(osp.join(PUBLISHED, 'pascal', str(count),
                                     'labeled.txt'))
        assert read_split_list(osp.join(out, 'unlabeled.txt')) == unlabeled
    fine = set(results[1464]['labeled'])
    # classic: labeled images drawn from the 1,464 fine ones
    for count in VOC_CLASSIC:
        assert set(results[count]['labeled']) <= fine
    # classic splits are independent draws, not nested (92 not in 183...)
    assert not set(results[92]['labeled']) <= set(results[183]['labeled'])
    # blender: 662 c 1323 c 2646 nested (and inside the fine set for the
    # two smallest); 2646 and 5291 contain all 1,464 fine images.
    assert set(results[662]['labeled']) <= set(results[1323]['labeled'])
    assert set(results[1323]['labeled']) <= set(results[2646]['labeled'])
    assert set(results[1323]['labeled']) <= fine
    assert fine <= set(results[2646]['labeled'])
    assert fine <= set(results[5291]['labeled'])
    val = convert_u2pl_list(osp.join(PUBLISHED, 'pascal', 'val.txt'), 'voc')
    assert len(val) == 1449 and not set(val) & train


@needs_published
def test_published_cityscapes_splits(tmp_path):
    results = convert_all('cityscapes', 'cityscapes', str(tmp_path))
    assert sorted(results) == CITY_COUNTS
    unions = set()
    for count, result in results.items():
        labeled, unlabeled = result['labeled'], result['unlabeled']
        assert len(labeled) == count
        assert len(labeled) + len(unlabeled) == 2975
        assert not set(labeled) & set(unlabeled)
        unions.add(frozenset(labeled) | frozenset(unlabeled))
        assert all(
            len(e.split('/')) == 2
            and e.split('/')[1].startswith(e.split('/')[0] + '_')
            for e in labeled + unlabeled)
    assert len(unions) == 1
    val = convert_u2pl_list(
        osp.join(PUBLISHED, 'cityscapes', 'val.txt'),
        'cityscapes',
        subset='val')
    assert len(val) == 500
    assert {e.split('/')[0] for e in val} == {'frankfurt', 'lindau', 'munster'}

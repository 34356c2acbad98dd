"""VisuallyCoherentMixup / VisuallyCoherentMixupCached: exact blends, the
canvas, the objects and their weights, edge inputs, the ratio's
distribution, seeding, the dataset wrapper and bad parameters."""
import numpy as np
import pytest
from mmengine.dataset import BaseDataset

from mmdet.datasets import MultiImageMixDataset
from mmdet.registry import TRANSFORMS
from mmdet.structures.bbox import HorizontalBoxes
from mmdet_freebies.datasets.transforms import (VisuallyCoherentMixup,
                                                VisuallyCoherentMixupCached)


def sample(h, w, value, boxes=(), labels=(), c=3, dtype=np.uint8,
           ignore=None):
    shape = (h, w) if c is None else (h, w, c)
    res = dict(
        img=np.full(shape, value, dtype=dtype),
        img_shape=(h, w),
        gt_bboxes=HorizontalBoxes(
            np.array(boxes, np.float32).reshape(-1, 4)),
        gt_bboxes_labels=np.array(labels, np.int64))
    res['gt_ignore_flags'] = (np.zeros(len(labels), bool)
                              if ignore is None else np.array(ignore, bool))
    return res


def mix(results, other, **kwargs):
    results['mix_results'] = [other]
    return VisuallyCoherentMixup(**kwargs).transform(results)


@pytest.mark.parametrize('dtype', [np.uint8, np.float32])
def test_blend_exact_pixels_and_canvas(dtype):
    # img1 2x3 of 100, img2 3x2 of 200, lambda = 0.25: canvas 3x3
    out = mix(sample(2, 3, 100, dtype=dtype), sample(3, 2, 200, dtype=dtype),
              ratio=0.25)
    img = out['img']
    assert img.dtype == dtype and img.shape == (3, 3, 3)
    expected = np.array([[175, 175, 25], [175, 175, 25], [150, 150, 0]])
    np.testing.assert_array_equal(img[..., 0], expected)
    np.testing.assert_array_equal(img, np.repeat(expected[..., None], 3, 2))
    assert out['img_shape'] == (3, 3)


def test_blend_rounds_integers_and_keeps_float_values():
    out = mix(sample(1, 1, 10), sample(1, 1, 21), ratio=0.5)
    assert out['img'][0, 0, 0] == 16  # 15.5 -> 16 (rounded, not truncated)
    out = mix(sample(1, 1, 0.1, dtype=np.float32),
              sample(1, 1, 0.7, dtype=np.float32), ratio=0.3)
    expected = (np.float32(0.1) * np.float32(0.3) +
                np.float32(0.7) * (np.float32(1) - np.float32(0.3)))
    assert out['img'].dtype == np.float32
    assert out['img'][0, 0, 0] == expected


def test_objects_concatenated_with_weights_and_geometry_kept():
    a = sample(4, 6, 0, boxes=[[0, 0, 2, 2], [1, 1, 5, 3]], labels=[3, 1],
               ignore=[False, True])
    b = sample(8, 4, 0, boxes=[[2, 3, 4, 8]], labels=[2])
    out = mix(a, b, ratio=0.7)
    np.testing.assert_array_equal(
        out['gt_bboxes'].numpy(),
        [[0, 0, 2, 2], [1, 1, 5, 3], [2, 3, 4, 8]])  # no shift, no scale
    np.testing.assert_array_equal(out['gt_bboxes_labels'], [3, 1, 2])
    assert out['gt_bboxes_labels'].dtype == np.int64
    np.testing.assert_array_equal(out['gt_ignore_flags'],
                                  [False, True, False])
    assert out['gt_weights'].dtype == np.float32
    np.testing.assert_allclose(out['gt_weights'], [0.7, 0.7, 0.3], rtol=1e-6)
    assert out['img'].shape == (8, 6, 3)


def test_numpy_boxes_and_missing_ignore_flags():
    a = sample(2, 2, 0, boxes=[[0, 0, 1, 1]], labels=[0])
    b = sample(2, 2, 0, boxes=[[0, 0, 2, 2]], labels=[1])
    a['gt_bboxes'] = a['gt_bboxes'].numpy()
    b['gt_bboxes'] = b['gt_bboxes'].numpy()
    del b['gt_ignore_flags']
    out = mix(a, b, ratio=0.5)
    assert isinstance(out['gt_bboxes'], np.ndarray)
    assert out['gt_bboxes'].shape == (2, 4)
    np.testing.assert_array_equal(out['gt_ignore_flags'], [False, False])


def test_ratio_one_returns_image_one_unchanged():
    a = sample(2, 2, 7, boxes=[[0, 0, 1, 1]], labels=[0])
    img = a['img'].copy()
    out = mix(a, sample(5, 5, 200, boxes=[[0, 0, 4, 4]], labels=[1]),
              ratio=1.0)
    np.testing.assert_array_equal(out['img'], img)
    assert out['img_shape'] == (2, 2)
    assert len(out['gt_bboxes']) == 1
    np.testing.assert_array_equal(out['gt_weights'], [1.0])


def test_existing_weights_are_multiplied():
    a = sample(2, 2, 0, boxes=[[0, 0, 1, 1]], labels=[0])
    a['gt_weights'] = np.array([0.6], np.float32)
    b = sample(2, 2, 0, boxes=[[0, 0, 1, 1]], labels=[0])
    b['gt_weights'] = np.array([0.5], np.float32)
    out = mix(a, b, ratio=0.5)
    np.testing.assert_allclose(out['gt_weights'], [0.3, 0.25])


@pytest.mark.parametrize('n1,n2', [(0, 2), (2, 0), (0, 0)])
def test_images_without_objects(n1, n2):
    boxes = [[0, 0, 1, 1]]
    a = sample(3, 3, 10, boxes=boxes * n1, labels=[0] * n1)
    b = sample(3, 3, 20, boxes=boxes * n2, labels=[1] * n2)
    out = mix(a, b, ratio=0.25)
    assert out['gt_bboxes'].shape == (n1 + n2, 4)
    assert out['gt_bboxes_labels'].shape == (n1 + n2, )
    np.testing.assert_allclose(out['gt_weights'],
                               [0.25] * n1 + [0.75] * n2)
    assert out['img'][0, 0, 0] == 18  # 2.5 + 15 = 17.5 -> 18


@pytest.mark.parametrize('gray_c', [None, 1])
def test_grayscale_next_to_colour(gray_c):
    gray = sample(4, 4, 100, c=gray_c)
    colour = sample(2, 2, 0)
    colour['img'][..., 1] = 200
    out = mix(gray, colour, ratio=0.5)
    img = out['img']
    assert img.shape == (4, 4, 3)
    np.testing.assert_array_equal(img[0, 0], [50, 150, 50])
    np.testing.assert_array_equal(img[3, 3], [50, 50, 50])
    # colour first, grayscale second
    out = mix(sample(2, 2, 0), sample(4, 4, 100, c=gray_c), ratio=0.5)
    assert out['img'].shape == (4, 4, 3)
    np.testing.assert_array_equal(out['img'][3, 3], [50, 50, 50])
    # two 2-D images stay 2-D
    out = mix(sample(2, 2, 10, c=None), sample(3, 1, 30, c=None), ratio=0.5)
    np.testing.assert_array_equal(out['img'],
                                  [[20, 5], [20, 5], [15, 0]])


def test_incompatible_channels_and_masks_raise():
    with pytest.raises(ValueError, match='3 and 4 channels'):
        mix(sample(2, 2, 0), sample(2, 2, 0, c=4), ratio=0.5)
    a = sample(2, 2, 0)
    a['gt_masks'] = object()
    with pytest.raises(ValueError, match="'gt_masks'"):
        mix(a, sample(2, 2, 0), ratio=0.5)


def test_needs_mix_results():
    with pytest.raises(KeyError, match='MultiImageMixDataset'):
        VisuallyCoherentMixup().transform(sample(2, 2, 0))


def test_prob_and_without_weights():
    out = mix(sample(2, 2, 9, boxes=[[0, 0, 1, 1]], labels=[0]),
              sample(3, 3, 50, boxes=[[0, 0, 1, 1]], labels=[1]), prob=0.0)
    assert out['img'].shape == (2, 2, 3) and (out['img'] == 9).all()
    np.testing.assert_array_equal(out['gt_weights'], [1.0])
    out = mix(sample(2, 2, 9, boxes=[[0, 0, 1, 1]], labels=[0]),
              sample(3, 3, 50, boxes=[[0, 0, 1, 1]], labels=[1]), ratio=0.5,
              with_weights=False)
    assert 'gt_weights' not in out and len(out['gt_bboxes']) == 2
    np.random.seed(0)
    t = VisuallyCoherentMixup(prob=0.3)
    mixed = 0
    for _ in range(2000):
        res = sample(1, 1, 0)
        res['mix_results'] = [sample(1, 2, 0)]
        mixed += t.transform(res)['img'].shape[1] == 2
    assert abs(mixed / 2000 - 0.3) < 4 * np.sqrt(0.3 * 0.7 / 2000)


def _lambdas(n, **kwargs):
    t = VisuallyCoherentMixup(**kwargs)
    out = []
    for _ in range(n):
        res = sample(1, 1, 0, boxes=[[0, 0, 1, 1]], labels=[0])
        res['mix_results'] = [sample(1, 1, 0)]
        out.append(t.transform(res)['gt_weights'][0])
    return np.array(out, np.float64)


@pytest.mark.parametrize('alpha,beta', [(1.5, 1.5), (1.0, 1.0), (2.0, 5.0)])
def test_ratio_follows_beta(alpha, beta):
    np.random.seed(1)
    lam = _lambdas(4000, alpha=alpha, beta=beta)
    mean = alpha / (alpha + beta)
    var = alpha * beta / ((alpha + beta)**2 * (alpha + beta + 1))
    assert abs(lam.mean() - mean) < 5 * np.sqrt(var / len(lam))
    assert lam.var() == pytest.approx(var, rel=0.1)
    # the CDF at 0.25 against the exact Beta CDF (numerical integration)
    x = np.linspace(0, 0.25, 20001)[1:]
    pdf = x**(alpha - 1) * (1 - x)**(beta - 1)
    full = np.linspace(0, 1, 80001)[1:-1]
    cdf = pdf.sum() * (x[1] - x[0]) / (
        (full**(alpha - 1) * (1 - full)**(beta - 1)).sum() *
        (full[1] - full[0]))
    assert abs((lam <= 0.25).mean() - cdf) < 0.03


def test_seeded_runs_repeat():
    np.random.seed(123)
    first = _lambdas(5)
    np.random.seed(123)
    np.testing.assert_array_equal(_lambdas(5), first)
    assert len(set(first.tolist())) == 5


@pytest.mark.parametrize('key,value', [('alpha', 0), ('beta', -1.0),
                                       ('alpha', 'a'), ('prob', 1.5),
                                       ('ratio', 2.0), ('prob', -0.1),
                                       ('alpha', float('inf')),
                                       ('beta', float('nan')),
                                       ('with_weights', 'False')])
def test_bad_parameters_fail_at_build(key, value):
    for name in ('VisuallyCoherentMixup', 'VisuallyCoherentMixupCached'):
        with pytest.raises(ValueError, match=f'{key}={value!r}'):
            TRANSFORMS.build({'type': name, key: value})
    with pytest.raises(ValueError, match='max_cached_images=1'):
        VisuallyCoherentMixupCached(max_cached_images=1)


def test_a_fixed_ratio_with_beta_parameters_fails_at_build():
    """ratio replaces the Beta draw: alpha or beta beside it would be
    silently ignored."""
    for name in ('VisuallyCoherentMixup', 'VisuallyCoherentMixupCached'):
        with pytest.raises(ValueError, match='ratio=0.5 replaces Beta'
                           '\\(alpha, beta\\), so alpha=1.0, beta=1.5'):
            TRANSFORMS.build(dict(type=name, ratio=0.5, alpha=1.0))
        TRANSFORMS.build(dict(type=name, ratio=0.5, alpha=1.5))  # default


def test_repr():
    assert repr(VisuallyCoherentMixup()) == (
        'VisuallyCoherentMixup(alpha=1.5, beta=1.5, ratio=None, prob=1.0, '
        'with_weights=True)')
    assert repr(VisuallyCoherentMixupCached(ratio=0.5, max_cached_images=4)
                ) == ('VisuallyCoherentMixupCached(alpha=1.5, beta=1.5, '
                      'ratio=0.5, prob=1.0, with_weights=True, '
                      'max_cached_images=4)')


def test_cached_variant_mixes_with_earlier_samples_only():
    np.random.seed(0)
    t = VisuallyCoherentMixupCached(ratio=0.5, max_cached_images=3)
    first = t.transform(sample(2, 2, 100, boxes=[[0, 0, 1, 1]], labels=[0]))
    # nothing cached yet: passes through with weight 1
    assert (first['img'] == 100).all()
    np.testing.assert_array_equal(first['gt_weights'], [1.0])
    second = t.transform(sample(2, 2, 200, boxes=[[0, 0, 2, 2]], labels=[1]))
    assert (second['img'] == 150).all()  # mixed with the first (unmixed)
    np.testing.assert_array_equal(second['gt_bboxes_labels'], [1, 0])
    np.testing.assert_allclose(second['gt_weights'], [0.5, 0.5])
    for value in (10, 20, 30, 40):
        t.transform(sample(2, 2, value))
    assert len(t.results_cache) == 3  # FIFO, bounded
    assert [r['img'][0, 0, 0] for r in t.results_cache] == [20, 30, 40]
    assert all('gt_weights' not in r for r in t.results_cache)


def test_cached_variant_never_mixes_an_image_with_an_older_copy():
    """A copy of the current image cached in an earlier epoch (same
    ``sample_idx``) is never its partner, however often it is cached."""
    np.random.seed(0)
    t = VisuallyCoherentMixupCached(ratio=0.5, max_cached_images=30)
    for idx, value in ((0, 100), (0, 100), (1, 200), (0, 100)):
        t.transform(dict(sample(2, 2, value), sample_idx=idx))
    for _ in range(20):
        out = t.transform(dict(sample(2, 2, 100), sample_idx=0))
        assert (out['img'] == 150).all()  # always image 1 (200)


def test_same_image_is_decided_by_path_before_index():
    """In a ConcatDataset ``sample_idx`` restarts in each part: two images
    with the same index but different paths are mixed; one path under two
    indices is the same image."""
    np.random.seed(0)
    t = VisuallyCoherentMixupCached(ratio=0.5, max_cached_images=30)
    t.transform(dict(sample(2, 2, 200), sample_idx=0, img_path='b/0.jpg'))
    out = t.transform(dict(sample(2, 2, 100), sample_idx=0,
                           img_path='a/0.jpg'))
    assert (out['img'] == 150).all()
    out = t.transform(dict(sample(2, 2, 200), sample_idx=7,
                           img_path='b/0.jpg'))
    assert (out['img'] == 150).all()  # a/0.jpg (100), never its own copy


class _SyntheticDataset(BaseDataset):
    """Image i is i * 10 everywhere, with one box labelled i."""

    def __init__(self, num=4, **kwargs):
        self.num = num
        super().__init__(**kwargs)

    def load_data_list(self):
        return [dict(idx=i) for i in range(self.num)]


def _load(results):
    i = results['idx']
    results.update(sample(2 + i, 2, i * 10, boxes=[[0, 0, 1, 1]],
                          labels=[i]))
    return results


def test_inside_multi_image_mix_dataset():
    np.random.seed(0)
    dataset = MultiImageMixDataset(
        dataset=_SyntheticDataset(pipeline=[_load]),
        pipeline=[dict(type='VisuallyCoherentMixup', ratio=0.5)])
    out = dataset[1]
    partner = out['gt_bboxes_labels'][1]
    assert out['gt_bboxes_labels'][0] == 1
    assert out['img'].shape == (2 + max(1, partner), 2, 3)
    assert out['img'][0, 0, 0] == round(0.5 * 10 + 0.5 * partner * 10)
    assert 'mix_results' not in out


def test_an_image_drawn_as_its_own_partner_is_not_mixed():
    """In a one-image dataset the partner is always the image itself: it is
    returned unmixed, each object once with weight 1 (mixing it with itself
    would duplicate every box at weights l and 1 - l)."""
    np.random.seed(0)
    dataset = MultiImageMixDataset(
        dataset=_SyntheticDataset(num=1, pipeline=[_load]),
        pipeline=[dict(type='VisuallyCoherentMixup', ratio=0.5)])
    out = dataset[0]
    np.testing.assert_array_equal(out['gt_bboxes_labels'], [0])
    np.testing.assert_array_equal(out['gt_weights'], [1.0])
    assert out['img'].shape == (2, 2, 3)


def test_without_weights_keeps_earlier_weights_aligned():
    a = sample(2, 2, 0, boxes=[[0, 0, 1, 1]], labels=[0])
    a['gt_weights'] = np.array([0.6], np.float32)
    b = sample(2, 2, 0, boxes=[[0, 0, 1, 1]] * 2, labels=[1, 1])
    out = mix(a, b, ratio=0.5, with_weights=False)
    np.testing.assert_allclose(out['gt_weights'], [0.6, 1.0, 1.0])


def test_boxes_of_two_types_are_named():
    """Box arrays from two pipelines that disagree cannot be stacked: the
    error names both types (numpy boxes with numpy boxes do stack)."""
    other = sample(2, 2, 0, boxes=[[0, 0, 1, 1]], labels=[1])
    other['gt_bboxes'] = other['gt_bboxes'].numpy()
    with pytest.raises(TypeError, match='cannot concatenate gt_bboxes of '
                       'types HorizontalBoxes and ndarray'):
        mix(sample(2, 2, 0, boxes=[[0, 0, 1, 1]], labels=[0]), other,
            ratio=0.5)
    first = sample(2, 2, 0, boxes=[[0, 0, 1, 1]], labels=[0])
    first['gt_bboxes'] = first['gt_bboxes'].numpy()
    out = mix(first, other, ratio=0.5)
    np.testing.assert_array_equal(out['gt_bboxes'],
                                  [[0, 0, 1, 1], [0, 0, 1, 1]])

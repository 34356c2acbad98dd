import pytest

from mmdet_freebies.utils.loss_keys import head_and_term, loss_kind


@pytest.mark.parametrize('key, expected', [
    ('loss_cls', ('det', 'cls')),
    ('loss_rpn_cls', ('rpn', 'cls')),
    ('loss_rpn_bbox', ('rpn', 'bbox')),
    ('s0.loss_bbox', ('s0', 'bbox')),
    ('d2.loss_cls', ('d2', 'cls')),
    # the DETR family's encoder and denoising terms, and TwoStageDetector's
    # renamed keys of an RPN whose own keys lack 'rpn'
    ('enc_loss_cls', ('enc', 'cls')),
    ('dn_loss_bbox', ('dn', 'bbox')),
    ('d0.dn_loss_iou', ('d0.dn', 'iou')),
    ('rpn_loss_cls', ('rpn', 'cls')),
    ('loss', (None, 'loss')),
    ('acc', (None, 'acc')),
    ('gls_ratio_rpn', (None, 'gls_ratio_rpn')),
    # LossWeightScheduleHook's logged weights are no losses
    ('weight/bbox_head.loss_bbox', (None, 'weight/bbox_head.loss_bbox')),
    ('weight/loss_cls', (None, 'weight/loss_cls')),
    ('xloss_cls', (None, 'xloss_cls')),
])
def test_head_and_term(key, expected):
    assert head_and_term(key) == expected


@pytest.mark.parametrize('key, kind', [
    ('loss_cls', 'cls'), ('loss_conf', 'cls'), ('loss_rpn_cls', 'cls'),
    ('s1.loss_cls', 'cls'), ('loss_bbox', 'reg'), ('loss_xy', 'reg'),
    ('loss_wh', 'reg'), ('loss_iou', 'reg'), ('loss_centerness', 'reg'),
    ('loss_dfl', 'reg'), ('loss_rpn_bbox', 'reg'), ('loss', None),
    ('loss_mask', None), ('acc', None), ('gls_ratio_cls', None),
])
def test_loss_kind(key, kind):
    assert loss_kind(key) == kind

# Faster R-CNN R-50-FPN 1x with Libra R-CNN's IoU-balanced sampling alone
# (Pang et al., CVPR 2019, Sec. 3.1): the sampling row that the Sampling-Free
# paper's comparison of sampling methods gives (random 36.4 -> 36.8 box AP on
# COCO, not re-checked; its main-results baseline is 36.8). See docs/libra.md.
_base_ = './faster_rcnn_biased.py'
model = dict(
    train_cfg=dict(
        rcnn=dict(
            sampler=dict(
                # replaces RandomSampler: negatives drawn evenly from 3 IoU
                # bins and positives evenly per gt, as Libra's released
                # CombinedSampler(InstanceBalancedPos, IoUBalancedNeg)
                _delete_=True,
                type='IoUBalancedSampler',
                num=512,
                pos_fraction=0.25,
                add_gt_as_proposals=True,
                # -1: all negatives in the bins, as the paper's code;
                # mmdet's turns -1 into 0 after its first image
                # (docs/libra.md)
                floor_thr=-1,
                floor_fraction=0,
                num_bins=3,
                instance_balanced_pos=True))))

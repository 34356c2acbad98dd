"""Loss keys as mmdet's detectors log them: the head each belongs to, and
whether it is a classification or a regression term. Shared by the health
hook's per-head ratios and the ablation tables' loss sums."""
from typing import Optional, Tuple

# Loss terms by the word after ``loss_`` (and the RPN's ``loss_rpn_``).
CLS_TERMS = ('cls', 'conf')
REG_TERMS = ('bbox', 'xy', 'wh', 'iou', 'centerness', 'dfl')


def head_and_term(key: str) -> Tuple[Optional[str], str]:
    """``('rpn', 'cls')`` for ``loss_rpn_cls`` (and for ``rpn_loss_cls``,
    as ``TwoStageDetector`` renames an RPN's keys that lack 'rpn'),
    ``('s0', 'bbox')`` for ``s0.loss_bbox``, ``('enc', 'cls')`` and
    ``('d0.dn', 'bbox')`` for the DETR family's ``enc_loss_cls`` and
    ``d0.dn_loss_bbox``, ``('det', 'cls')`` for ``loss_cls``;
    ``(None, key)`` for a key that is no loss term, such as the scalars the
    pack's hooks log beside the losses (``weight/bbox_head.loss_bbox``)."""
    prefix, sep, term = key.rpartition('loss_')
    # a prefix ends with '.' (a stage) or '_' (enc_, dn_, rpn_); mmdet's
    # loss keys have no '/'
    if not sep or (prefix and prefix[-1] not in '._') or '/' in prefix:
        return None, key
    head = prefix.rstrip('._') or 'det'
    if term.startswith('rpn_'):
        head, term = 'rpn', term[4:]
    return head, term


def loss_kind(key: str) -> Optional[str]:
    """``'cls'`` or ``'reg'`` for a classification or regression loss key,
    None for any other key (``loss``, ``acc``, ``loss_mask``, ...)."""
    head, term = head_and_term(key)
    if head is None:
        return None
    if term in CLS_TERMS:
        return 'cls'
    if term in REG_TERMS:
        return 'reg'
    return None

__version__ = '0.1.0'

# Supported ranges, checked when the package is imported: [min, max).
SUPPORTED = {
    'mmdet': ('3.3.0', '3.4.0'),
    'mmcv': ('2.0.0rc4', '2.2.0'),
    'mmengine': ('0.10.0', '1.0.0'),
}

import mmcv
import mmdet
import mmengine
import pytest

from mmdet_freebies.utils import check_versions


def test_supported_stack_passes():
    check_versions()


@pytest.mark.parametrize('module, version, expected', [
    (mmdet, '3.2.0', 'mmdet==3.2.0 (need >=3.3.0,<3.4.0)'),
    (mmcv, '2.2.0', 'mmcv==2.2.0 (need >=2.0.0rc4,<2.2.0)'),
    (mmengine, '0.9.1', 'mmengine==0.9.1 (need >=0.10.0,<1.0.0)'),
])
def test_unsupported_version_names_package_and_range(monkeypatch, module,
                                                     version, expected):
    monkeypatch.setattr(module, '__version__', version)
    with pytest.raises(ImportError) as e:
        check_versions()
    assert expected in str(e.value)
    assert 'mmdet_freebies supports' in str(e.value)


def test_missing_package_is_named(monkeypatch):
    from mmdet_freebies.utils import version_check
    real = version_check.import_module

    def import_module(name):
        if name == 'mmcv':
            raise ImportError(name)
        return real(name)

    monkeypatch.setattr(version_check, 'import_module', import_module)
    with pytest.raises(ImportError,
                       match=r'mmcv is not installed \(need >=2.0.0rc4'):
        check_versions()

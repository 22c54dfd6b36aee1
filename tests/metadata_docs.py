"""Two versions of the Labour Code and an amending law, as files with real headers and
sidecars, for the metadata and filter tests.

The article texts are those of the codes (Bộ luật Lao động 2012 Điều 187 and 2019 Điều 169 on
the retirement age, Điều 27/25 on probation); the amending law is written for the tests in the
shape such laws take (its number is not a real law's).
"""

from __future__ import annotations

from pathlib import Path

OLD = """QUỐC HỘI
CỘNG HÒA XÃ HỘI CHỦ NGHĨA VIỆT NAM
Độc lập - Tự do - Hạnh phúc
Bộ luật số: 10/2012/QH13
Hà Nội, ngày 18 tháng 6 năm 2012

BỘ LUẬT
LAO ĐỘNG
Căn cứ Hiến pháp nước Cộng hòa xã hội chủ nghĩa Việt Nam năm 1992;
Quốc hội ban hành Bộ luật lao động.
Chương IV:HỢP ĐỒNG LAO ĐỘNG
Điều 27. Thời gian thử việc
Thời gian thử việc căn cứ vào tính chất và mức độ phức tạp của công việc nhưng chỉ được thử việc 01 lần đối với một công việc và bảo đảm các điều kiện sau đây:
1. Không quá 60 ngày đối với công việc cần trình độ chuyên môn, kỹ thuật từ cao đẳng trở lên;
2. Không quá 30 ngày đối với công việc cần trình độ chuyên môn kỹ thuật trung cấp nghề, trung cấp chuyên nghiệp, công nhân kỹ thuật, nhân viên nghiệp vụ.
Chương XII:BẢO HIỂM XÃ HỘI
Điều 187. Tuổi nghỉ hưu
1. Người lao động bảo đảm điều kiện về thời gian đóng bảo hiểm xã hội theo quy định của pháp luật về bảo hiểm xã hội được hưởng lương hưu khi nam đủ 60 tuổi, nữ đủ 55 tuổi.
2. Người lao động bị suy giảm khả năng lao động; làm công việc đặc biệt nặng nhọc, độc hại, nguy hiểm; làm việc ở vùng cao, biên giới, hải đảo có thể nghỉ hưu ở tuổi thấp hơn.
Chương XVII:ĐIỀU KHOẢN THI HÀNH
Điều 241. Hiệu lực thi hành
Bộ luật này có hiệu lực thi hành từ ngày 01 tháng 5 năm 2013.
"""

NEW = """QUỐC HỘI
CỘNG HÒA XÃ HỘI CHỦ NGHĨA VIỆT NAM
Độc lập - Tự do - Hạnh phúc
Bộ luật số: 45/2019/QH14
Hà Nội, ngày 20 tháng 11 năm 2019

BỘ LUẬT
LAO ĐỘNG
Căn cứ Hiến pháp nước Cộng hòa xã hội chủ nghĩa Việt Nam;
Quốc hội ban hành Bộ luật Lao động.
Chương III:HỢP ĐỒNG LAO ĐỘNG
Điều 25. Thời gian thử việc
Thời gian thử việc do hai bên thỏa thuận căn cứ vào tính chất và mức độ phức tạp của công việc nhưng chỉ được thử việc một lần đối với một công việc và bảo đảm điều kiện sau đây:
1. Không quá 180 ngày đối với công việc của người quản lý doanh nghiệp theo quy định của Luật Doanh nghiệp, Luật Quản lý, sử dụng vốn nhà nước đầu tư vào sản xuất, kinh doanh tại doanh nghiệp;
2. Không quá 60 ngày đối với công việc có chức danh nghề nghiệp cần trình độ chuyên môn, kỹ thuật từ cao đẳng trở lên.
Chương XII:BẢO HIỂM XÃ HỘI
Điều 169. Tuổi nghỉ hưu
1. Người lao động bảo đảm điều kiện về thời gian đóng bảo hiểm xã hội theo quy định của pháp luật về bảo hiểm xã hội được hưởng lương hưu khi đủ tuổi nghỉ hưu.
2. Tuổi nghỉ hưu của người lao động trong điều kiện lao động bình thường được điều chỉnh theo lộ trình cho đến khi đủ 62 tuổi đối với lao động nam vào năm 2028 và đủ 60 tuổi đối với lao động nữ vào năm 2035.
Chương XVII:ĐIỀU KHOẢN THI HÀNH
Điều 220. Hiệu lực thi hành
1. Bộ luật này có hiệu lực thi hành từ ngày 01 tháng 01 năm 2021.
2. Bộ luật Lao động số 10/2012/QH13 hết hiệu lực thi hành kể từ ngày Bộ luật này có hiệu lực.
"""

AMENDING = """QUỐC HỘI
CỘNG HÒA XÃ HỘI CHỦ NGHĨA VIỆT NAM
Độc lập - Tự do - Hạnh phúc
Luật số: 99/2024/QH15
Hà Nội, ngày 29 tháng 6 năm 2024

LUẬT
SỬA ĐỔI, BỔ SUNG MỘT SỐ ĐIỀU CỦA BỘ LUẬT LAO ĐỘNG
Căn cứ Hiến pháp nước Cộng hòa xã hội chủ nghĩa Việt Nam;
Quốc hội ban hành Luật sửa đổi, bổ sung một số điều của Bộ luật Lao động số 45/2019/QH14.
Điều 1. Sửa đổi, bổ sung một số điều của Bộ luật Lao động
1. Sửa đổi, bổ sung khoản 1 Điều 25 như sau:
“1. Không quá 120 ngày đối với công việc của người quản lý doanh nghiệp;”
2. Bãi bỏ khoản 3 Điều 30.
Điều 2. Hiệu lực thi hành
Luật này có hiệu lực thi hành từ ngày 01 tháng 01 năm 2025.
"""

OLD_SIDECAR = """# Bộ luật Lao động 2012: in force from 2013 until the 2019 code replaced it.
so_hieu = "10/2012/QH13"
effective = 2013-05-01
expires = 2021-01-01
status = "Hết hiệu lực"
"""

NEW_SIDECAR = """so_hieu = "45/2019/QH14"
effective = 2021-01-01
status = "Còn hiệu lực"
"""


def write_versions(folder: Path, *, amending: bool = False, sidecars: bool = True) -> Path:
    """``bo-luat-lao-dong-2012.txt`` and ``bo-luat-lao-dong-2019.txt`` (with their
    ``.meta.toml`` sidecars), and with ``amending`` the amending law, in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "bo-luat-lao-dong-2012.txt").write_text(OLD, encoding="utf-8")
    (folder / "bo-luat-lao-dong-2019.txt").write_text(NEW, encoding="utf-8")
    if sidecars:
        (folder / "bo-luat-lao-dong-2012.meta.toml").write_text(OLD_SIDECAR, encoding="utf-8")
        (folder / "bo-luat-lao-dong-2019.meta.toml").write_text(NEW_SIDECAR, encoding="utf-8")
    if amending:
        (folder / "luat-sua-doi-bo-luat-lao-dong.txt").write_text(AMENDING, encoding="utf-8")
    return folder


__all__ = ["AMENDING", "NEW", "NEW_SIDECAR", "OLD", "OLD_SIDECAR", "write_versions"]

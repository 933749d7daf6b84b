"""Sends DICOM files to a C-STORE SCP with pynetdicom, over several associations.

usage: net_send.py HOST PORT CALLED CALLING LISTFILE [LISTFILE ...]

Each LISTFILE holds one path per line and is sent over its own association. Prints one line
per association: "association N: stored S of T" and exits 1 if any store failed or an
association was refused.
"""
import sys

from pydicom import dcmread
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage, PositronEmissionTomographyImageStorage


def main():
    host, port, called, calling = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    ok = True
    for n, listfile in enumerate(sys.argv[5:], start=1):
        paths = [p for p in open(listfile).read().split("\n") if p]
        ae = AE(ae_title=calling)
        ae.add_requested_context(CTImageStorage)
        ae.add_requested_context(PositronEmissionTomographyImageStorage)
        assoc = ae.associate(host, port, ae_title=called)
        if not assoc.is_established:
            print(f"association {n}: refused")
            ok = False
            continue
        stored = 0
        for p in paths:
            status = assoc.send_c_store(dcmread(p))
            if status and status.Status == 0x0000:
                stored += 1
        assoc.release()
        print(f"association {n}: stored {stored} of {len(paths)}")
        ok &= stored == len(paths)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()

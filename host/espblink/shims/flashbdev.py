# The virtual board's flash block device, as the ESP8266 port's frozen flashbdev.py: 4 KB sectors from
# esp.flash_user_start() (0x100000 on ESP8266_GENERIC, 2 MB layout and up) to the end of the flash less
# the SDK's 20 KB of parameters.
import esp


class FlashBdev:
    SEC_SIZE = 4096
    START_SEC = esp.flash_user_start() // SEC_SIZE
    if START_SEC < 256:
        START_SEC += 1  # the port keeps a sector below 1 MB for native code

    def __init__(self, blocks):
        self.blocks = blocks

    def readblocks(self, n, buf, off=0):
        esp.flash_read((n + self.START_SEC) * self.SEC_SIZE + off, buf)

    def writeblocks(self, n, buf, off=None):
        if off is None:
            esp.flash_erase(n + self.START_SEC)
            off = 0
        esp.flash_write((n + self.START_SEC) * self.SEC_SIZE + off, buf)

    def ioctl(self, op, arg):
        if op == 4:  # block count
            return self.blocks
        if op == 5:  # block size
            return self.SEC_SIZE
        if op == 6:  # erase
            esp.flash_erase(arg + self.START_SEC)
            return 0


bdev = FlashBdev((esp.flash_size() - 20480) // FlashBdev.SEC_SIZE - FlashBdev.START_SEC)

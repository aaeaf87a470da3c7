; A 512-byte boot-sector "guest" that makes QEMU emit guest-side QMP events.
;
; Run by SeaBIOS on a q35 machine with -device pvpanic, -device ib700, a virtio-blk disk
; that fails its first read of LBA 1 (BIOS drive 0x81) and -no-shutdown. It keeps a stage
; counter in CMOS NVRAM byte 0x4E, which survives resets, and does one thing per boot:
;   0  write the RTC seconds register 40 times in ~2 s, then pvpanic "panicked"
;      -> RTC_CHANGE (throttled), GUEST_PANICKED, STOP
;   1  arm the ib700 watchdog for 2 s                 -> WATCHDOG, STOP
;   2  read LBA 1 of drive 0x81, then reset via 0xCF9 -> BLOCK_IO_ERROR, STOP; RESET
;   3  ACPI S3 (PM1a_CNT 0x604 <- 0x2400)             -> SUSPEND
;   4  ACPI S5 (PM1a_CNT 0x604 <- 0x2000)             -> SHUTDOWN, STOP
;   5+ enable the power button, pvpanic "crash loaded", wait for the button, S5
;                                                     -> GUEST_CRASHLOADED; POWERDOWN, SHUTDOWN
; Assemble with: nasm -f bin -o boot.bin boot.asm

bits 16
org 0x7c00

%define STAGE_CMOS  0x4e
%define PVPANIC     0x505
%define PM1A_STS    0x600
%define PM1A_EN     0x602
%define PM1A_CNT    0x604

start:
    cli
    xor ax, ax
    mov ds, ax
    mov es, ax
    mov ss, ax
    mov sp, 0x7c00
    sti
    mov al, STAGE_CMOS          ; bl <- stage, CMOS <- stage + 1
    out 0x70, al
    in al, 0x71
    mov bl, al
    inc al
    mov bh, al
    mov al, STAGE_CMOS
    out 0x70, al
    mov al, bh
    out 0x71, al
    cmp bl, 0
    je rtc_then_panic
    cmp bl, 1
    je watchdog
    cmp bl, 2
    je disk_error
    cmp bl, 3
    je suspend
    cmp bl, 4
    je poweroff

crash_loaded:
    mov dx, PM1A_EN             ; enable the power button event first: the host presses
    mov ax, 0x100               ; the button as soon as it sees GUEST_CRASHLOADED
    out dx, ax
    mov dx, PVPANIC
    mov al, 2
    out dx, al
.poll:
    call delay
    mov dx, PM1A_STS
    in ax, dx
    test ax, 0x100
    jz .poll
    jmp poweroff

rtc_then_panic:
    mov si, 40
.next:
    xor al, al                  ; RTC seconds register
    out 0x70, al
    mov ax, si
    out 0x71, al
    call delay
    dec si
    jnz .next
    mov dx, PVPANIC
    mov al, 1
    out dx, al
    jmp idle

watchdog:
    mov dx, 0x443               ; ib700: enable with timeout index 14 (2 s)
    mov al, 0x0e
    out dx, al
    jmp idle

disk_error:
    mov ax, 0x0201              ; int 13h read 1 sector: CHS 0/0/2 = LBA 1, drive 0x81
    mov cx, 0x0002
    mov dx, 0x0081
    mov bx, 0x8000
    int 0x13
    mov dx, 0xcf9               ; hard reset
    mov al, 6
    out dx, al
    jmp idle

suspend:
    mov dx, PM1A_CNT
    mov ax, 0x2400
    out dx, ax
    jmp idle

poweroff:
    mov dx, PM1A_CNT
    mov ax, 0x2000
    out dx, ax

idle:
    hlt
    jmp idle

delay:                          ; 50 ms via BIOS int 15h AH=86h (CX:DX microseconds)
    mov ah, 0x86
    xor cx, cx
    mov dx, 50000
    int 0x15
    ret

times 510 - ($ - $$) db 0
dw 0xaa55

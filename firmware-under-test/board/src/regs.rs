//! Every peripheral register this firmware touches, with its address and the bits used.
//!
//! This list is deliberately small and complete: the emulated rig models exactly these
//! registers, and the board README's peripheral table is generated from the same facts.
//! Addresses and bit positions from RM0440 (STM32G4 reference manual); section numbers in
//! brackets. Cross-checked against ST's CMSIS header `stm32g431xx.h` and the LL driver headers. Core (Arm) registers from the ARMv7-M Architecture Reference Manual.

/// A 32-bit memory-mapped register.
#[derive(Clone, Copy)]
pub struct Reg(pub usize);

impl Reg {
    /// Volatile read.
    #[inline(always)]
    pub fn read(self) -> u32 {
        // SAFETY: every `Reg` in this module is a valid, aligned peripheral register address
        // of the STM32G431; reads have no side effects other than the documented ones.
        unsafe { core::ptr::read_volatile(self.0 as *const u32) }
    }

    /// Volatile write.
    #[inline(always)]
    pub fn write(self, value: u32) {
        // SAFETY: as for `read`; the caller writes documented values.
        unsafe { core::ptr::write_volatile(self.0 as *mut u32, value) }
    }

    /// Read-modify-write: clears `clear`, then sets `set`.
    #[inline(always)]
    pub fn modify(self, clear: u32, set: u32) {
        self.write((self.read() & !clear) | set);
    }

    /// Spins until `(read() & mask) == value`, at most `max_reads` reads; false on timeout.
    pub fn wait(self, mask: u32, value: u32, max_reads: u32) -> bool {
        for _ in 0..max_reads {
            if self.read() & mask == value {
                return true;
            }
        }
        false
    }
}

/// Reset and clock control [7.4], base 0x4002_1000.
pub mod rcc {
    use super::Reg;
    const BASE: usize = 0x4002_1000;
    /// Clock control: HSION 8, HSIRDY 10, PLLON 24, PLLRDY 25.
    pub const CR: Reg = Reg(BASE);
    pub const CR_PLLON: u32 = 1 << 24;
    pub const CR_PLLRDY: u32 = 1 << 25;
    /// Clock configuration: SW 1:0, SWS 3:2, HPRE 7:4, PPRE1 10:8, PPRE2 13:11.
    pub const CFGR: Reg = Reg(BASE + 0x08);
    pub const CFGR_SW_MASK: u32 = 0b11;
    pub const CFGR_SW_PLL: u32 = 0b11;
    pub const CFGR_SWS_MASK: u32 = 0b11 << 2;
    pub const CFGR_SWS_PLL: u32 = 0b11 << 2;
    pub const CFGR_HPRE_MASK: u32 = 0xF << 4;
    pub const CFGR_HPRE_DIV2: u32 = 0b1000 << 4;
    /// PLL configuration: PLLSRC 1:0, PLLM 7:4, PLLN 14:8, PLLREN 24, PLLR 26:25.
    pub const PLLCFGR: Reg = Reg(BASE + 0x0C);
    pub const PLLCFGR_SRC_HSI16: u32 = 0b10;
    pub const PLLCFGR_REN: u32 = 1 << 24;
    /// AHB2 enable: GPIOAEN 0, GPIOBEN 1, GPIOCEN 2, ADC12EN 13.
    pub const AHB2ENR: Reg = Reg(BASE + 0x4C);
    pub const AHB2ENR_GPIOA: u32 = 1 << 0;
    pub const AHB2ENR_GPIOB: u32 = 1 << 1;
    pub const AHB2ENR_GPIOC: u32 = 1 << 2;
    pub const AHB2ENR_ADC12: u32 = 1 << 13;
    /// APB1 enable 1: PWREN 28.
    pub const APB1ENR1: Reg = Reg(BASE + 0x58);
    pub const APB1ENR1_PWR: u32 = 1 << 28;
    /// APB2 enable: TIM1EN 11.
    pub const APB2ENR: Reg = Reg(BASE + 0x60);
    pub const APB2ENR_TIM1: u32 = 1 << 11;
    /// Control/status: reset flags 25..31, RMVF 23.
    pub const CSR: Reg = Reg(BASE + 0x94);
    pub const CSR_RMVF: u32 = 1 << 23;
    pub const CSR_OBLRSTF: u32 = 1 << 25;
    pub const CSR_PINRSTF: u32 = 1 << 26;
    pub const CSR_BORRSTF: u32 = 1 << 27;
    pub const CSR_SFTRSTF: u32 = 1 << 28;
    pub const CSR_IWDGRSTF: u32 = 1 << 29;
    pub const CSR_WWDGRSTF: u32 = 1 << 30;
    pub const CSR_LPWRRSTF: u32 = 1 << 31;
}

/// Power control [6.4], base 0x4000_7000.
pub mod pwr {
    use super::Reg;
    /// Control 5: R1MODE 8 (reset value 1; 0 = range 1 boost mode, needed above 150 MHz).
    pub const CR5: Reg = Reg(0x4000_7000 + 0x80);
    pub const CR5_R1MODE: u32 = 1 << 8;
}

/// Flash interface [5.7], base 0x4002_2000.
pub mod flash {
    use super::Reg;
    /// Access control: LATENCY 3:0, PRFTEN 8, ICEN 9, DCEN 10.
    pub const ACR: Reg = Reg(0x4002_2000);
    pub const ACR_LATENCY_MASK: u32 = 0xF;
    pub const ACR_PRFTEN: u32 = 1 << 8;
    pub const ACR_ICEN: u32 = 1 << 9;
    pub const ACR_DCEN: u32 = 1 << 10;
}

/// Independent watchdog [42.4], base 0x4000_3000, clocked by LSI (32 kHz nominal).
pub mod iwdg {
    use super::Reg;
    const BASE: usize = 0x4000_3000;
    /// Key: 0xCCCC start, 0x5555 unlock PR/RLR, 0xAAAA refresh.
    pub const KR: Reg = Reg(BASE);
    pub const KEY_START: u32 = 0xCCCC;
    pub const KEY_UNLOCK: u32 = 0x5555;
    pub const KEY_REFRESH: u32 = 0xAAAA;
    /// Prescaler: 0 = /4.
    pub const PR: Reg = Reg(BASE + 0x04);
    /// Reload value, 12 bits.
    pub const RLR: Reg = Reg(BASE + 0x08);
    /// Status: PVU 0, RVU 1, WVU 2 (update in progress).
    pub const SR: Reg = Reg(BASE + 0x0C);
}

/// General-purpose I/O [9.4]: GPIOA 0x4800_0000, GPIOB 0x4800_0400, GPIOC 0x4800_0800.
pub mod gpio {
    use super::Reg;
    /// One port's registers.
    #[derive(Clone, Copy)]
    pub struct Port(pub usize);
    pub const GPIOA: Port = Port(0x4800_0000);
    pub const GPIOB: Port = Port(0x4800_0400);
    pub const GPIOC: Port = Port(0x4800_0800);
    impl Port {
        /// Mode: 2 bits per pin, 00 input, 01 output, 10 alternate function, 11 analog.
        pub const fn moder(self) -> Reg {
            Reg(self.0)
        }
        /// Output speed: 2 bits per pin.
        pub const fn ospeedr(self) -> Reg {
            Reg(self.0 + 0x08)
        }
        /// Pull-up/down: 2 bits per pin, 01 pull-up, 10 pull-down.
        pub const fn pupdr(self) -> Reg {
            Reg(self.0 + 0x0C)
        }
        /// Input data.
        pub const fn idr(self) -> Reg {
            Reg(self.0 + 0x10)
        }
        /// Bit set (low half) / reset (high half).
        pub const fn bsrr(self) -> Reg {
            Reg(self.0 + 0x18)
        }
        /// Alternate function of pins 8..15, 4 bits each.
        pub const fn afrh(self) -> Reg {
            Reg(self.0 + 0x24)
        }
    }
}

/// Advanced-control timer TIM1 [28.6], base 0x4001_2C00.
pub mod tim1 {
    use super::Reg;
    const BASE: usize = 0x4001_2C00;
    /// Control 1: CEN 0, ARPE 7.
    pub const CR1: Reg = Reg(BASE);
    pub const CR1_CEN: u32 = 1 << 0;
    pub const CR1_ARPE: u32 = 1 << 7;
    /// Interrupt enable: UIE 0.
    pub const DIER: Reg = Reg(BASE + 0x0C);
    pub const DIER_UIE: u32 = 1 << 0;
    /// Status (write 0 to clear): UIF 0.
    pub const SR: Reg = Reg(BASE + 0x10);
    pub const SR_UIF: u32 = 1 << 0;
    /// Event generation: UG 0.
    pub const EGR: Reg = Reg(BASE + 0x14);
    pub const EGR_UG: u32 = 1 << 0;
    /// Capture/compare mode 1: OC1PE 3, OC1M 6:4 (+ bit 16).
    pub const CCMR1: Reg = Reg(BASE + 0x18);
    /// Capture/compare mode 2: OC4PE 11, OC4M 14:12 (+ bit 24).
    pub const CCMR2: Reg = Reg(BASE + 0x1C);
    /// PWM mode 1 in an OCxM field (0b0110): active while CNT < CCR.
    pub const OCM_PWM1: u32 = 0b110;
    /// PWM mode 2 (0b0111): inactive while CNT < CCR, active from the match.
    pub const OCM_PWM2: u32 = 0b111;
    /// Capture/compare enable: CC1E 0, CC1NE 2.
    pub const CCER: Reg = Reg(BASE + 0x20);
    pub const CCER_CC1E: u32 = 1 << 0;
    pub const CCER_CC1NE: u32 = 1 << 2;
    /// Prescaler.
    pub const PSC: Reg = Reg(BASE + 0x28);
    /// Auto-reload (period - 1).
    pub const ARR: Reg = Reg(BASE + 0x2C);
    /// Repetition counter: an update event every RCR + 1 periods.
    pub const RCR: Reg = Reg(BASE + 0x30);
    /// Compare 1: PWM duty of leg A.
    pub const CCR1: Reg = Reg(BASE + 0x34);
    /// Compare 4: ADC trigger instant in each period.
    pub const CCR4: Reg = Reg(BASE + 0x40);
    /// Break and dead-time: DTG 7:0, OSSI 10, OSSR 11, MOE 15.
    pub const BDTR: Reg = Reg(BASE + 0x44);
    pub const BDTR_OSSI: u32 = 1 << 10;
    pub const BDTR_OSSR: u32 = 1 << 11;
    pub const BDTR_MOE: u32 = 1 << 15;
}

/// ADC1 [21.7], base 0x5000_0000; ADC1/2 common registers at 0x5000_0300.
pub mod adc1 {
    use super::Reg;
    const BASE: usize = 0x5000_0000;
    /// Interrupt and status (write 1 to clear): ADRDY 0, JEOS 6.
    pub const ISR: Reg = Reg(BASE);
    pub const ISR_ADRDY: u32 = 1 << 0;
    pub const ISR_JEOS: u32 = 1 << 6;
    /// Interrupt enable: JEOSIE 6.
    pub const IER: Reg = Reg(BASE + 0x04);
    pub const IER_JEOSIE: u32 = 1 << 6;
    /// Control: ADEN 0, JADSTART 3, ADVREGEN 28, DEEPPWD 29, ADCAL 31.
    pub const CR: Reg = Reg(BASE + 0x08);
    pub const CR_ADEN: u32 = 1 << 0;
    pub const CR_JADSTART: u32 = 1 << 3;
    pub const CR_ADVREGEN: u32 = 1 << 28;
    pub const CR_DEEPPWD: u32 = 1 << 29;
    pub const CR_ADCAL: u32 = 1 << 31;
    /// Sample time 1: SMPx at bits 3x+2:3x for channels 0..9.
    pub const SMPR1: Reg = Reg(BASE + 0x14);
    /// Injected sequence: JL 1:0, JEXTSEL 6:2, JEXTEN 8:7, JSQ1 13:9, JSQ2 19:15.
    pub const JSQR: Reg = Reg(BASE + 0x4C);
    /// JEXTSEL value for TIM1_CC4 (ADC1/2 injected trigger jext1).
    pub const JEXTSEL_TIM1_CC4: u32 = 1;
    /// Injected data 1 (motor current).
    pub const JDR1: Reg = Reg(BASE + 0x80);
    /// Injected data 2 (battery voltage).
    pub const JDR2: Reg = Reg(BASE + 0x84);
    /// ADC1/2 common control: CKMODE 17:16 (0b11 = HCLK / 4, synchronous).
    pub const COMMON_CCR: Reg = Reg(0x5000_0300 + 0x08);
    pub const CCR_CKMODE_HCLK_DIV4: u32 = 0b11 << 16;
}

/// Debug MCU configuration [47.16], base 0xE004_2000: stop the watchdog and the PWM timer
/// while the core is halted by a debugger (a halted core must not leave the motor driven).
pub mod dbgmcu {
    use super::Reg;
    /// APB1 freeze 1: DBG_IWDG_STOP 12.
    pub const APB1FZR1: Reg = Reg(0xE004_2000 + 0x08);
    pub const APB1FZR1_IWDG_STOP: u32 = 1 << 12;
    /// APB2 freeze: DBG_TIM1_STOP 11.
    pub const APB2FZR: Reg = Reg(0xE004_2000 + 0x10);
    pub const APB2FZR_TIM1_STOP: u32 = 1 << 11;
}

/// Arm core system control block fault registers (ARMv7-M B3.2), read in the fault handlers.
pub mod scb {
    use super::Reg;
    /// Configurable fault status.
    pub const CFSR: Reg = Reg(0xE000_ED28);
    /// HardFault status.
    pub const HFSR: Reg = Reg(0xE000_ED2C);
    /// MemManage fault address.
    pub const MMFAR: Reg = Reg(0xE000_ED34);
    /// BusFault address.
    pub const BFAR: Reg = Reg(0xE000_ED38);
}

/// Device interrupt numbers used (RM0440 Table 97).
pub mod irq {
    /// ADC1 and ADC2.
    pub const ADC1_2: u16 = 18;
    /// TIM1 update (and TIM16).
    pub const TIM1_UP_TIM16: u16 = 25;
    /// Number of device interrupt vectors of the STM32G431.
    pub const COUNT: usize = 102;
}

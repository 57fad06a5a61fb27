//! Register-level models of the STM32G431 peripherals the board firmware uses, and nothing
//! else: the register list of `firmware-under-test/board/src/regs.rs` (and its README).
//!
//! Every access to an address that is not in [`REGISTERS`] is refused with armagnac's
//! `InvalidAddress`, which stops the emulation and is reported with the address and the PC:
//! an unmodelled register is never answered with zero. Behaviour modelled: RCC ready flags
//! follow their enables (PLLRDY, SWS), reset flags and RMVF; the watchdog's keys, reload and
//! refresh times; TIM1 status write-0-to-clear, the update generation; GPIO BSRR into the
//! output latch, the trigger input on PB6; ADC calibration, ready flag, write-1-to-clear
//! status and the injected data registers (set by the rig at each conversion); DWT CYCCNT
//! from the emulator's cycle count.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use armagnac::memory::{
    Env, MemoryAccessError, MemoryInterface, MemoryReadResult, MemoryWriteResult,
};

/// Modelled registers: (address, name, reset value).
pub const REGISTERS: &[(u32, &str, u32)] = &[
    (RCC_CR, "RCC_CR", 0x0000_0063),
    (RCC_CFGR, "RCC_CFGR", 0x0000_0005),
    (RCC_PLLCFGR, "RCC_PLLCFGR", 0x0000_1000),
    (RCC_AHB2ENR, "RCC_AHB2ENR", 0),
    (RCC_APB1ENR1, "RCC_APB1ENR1", 0x0000_0400),
    (RCC_APB2ENR, "RCC_APB2ENR", 0),
    (RCC_CSR, "RCC_CSR", 0x0C00_0000),
    (PWR_CR5, "PWR_CR5", 0x0000_0100),
    (FLASH_ACR, "FLASH_ACR", 0x0000_0600),
    (IWDG_KR, "IWDG_KR", 0),
    (IWDG_PR, "IWDG_PR", 0),
    (IWDG_RLR, "IWDG_RLR", 0x0000_0FFF),
    (IWDG_SR, "IWDG_SR", 0),
    (TIM1_CR1, "TIM1_CR1", 0),
    (TIM1_DIER, "TIM1_DIER", 0),
    (TIM1_SR, "TIM1_SR", 0),
    (TIM1_EGR, "TIM1_EGR", 0),
    (TIM1_CCMR1, "TIM1_CCMR1", 0),
    (TIM1_CCMR2, "TIM1_CCMR2", 0),
    (TIM1_CCER, "TIM1_CCER", 0),
    (TIM1_PSC, "TIM1_PSC", 0),
    (TIM1_ARR, "TIM1_ARR", 0xFFFF),
    (TIM1_RCR, "TIM1_RCR", 0),
    (TIM1_CCR1, "TIM1_CCR1", 0),
    (TIM1_CCR4, "TIM1_CCR4", 0),
    (TIM1_BDTR, "TIM1_BDTR", 0),
    (GPIOA + MODER, "GPIOA_MODER", 0xABFF_FFFF),
    (GPIOA + OSPEEDR, "GPIOA_OSPEEDR", 0x0C00_0000),
    (GPIOA + AFRH, "GPIOA_AFRH", 0),
    (GPIOB + MODER, "GPIOB_MODER", 0xFFFF_FEBF),
    (GPIOB + PUPDR, "GPIOB_PUPDR", 0x0000_0100),
    (GPIOB + IDR, "GPIOB_IDR", 0),
    (GPIOB + BSRR, "GPIOB_BSRR", 0),
    (GPIOC + MODER, "GPIOC_MODER", 0xFFFF_FFFF),
    (GPIOC + OSPEEDR, "GPIOC_OSPEEDR", 0),
    (GPIOC + AFRH, "GPIOC_AFRH", 0),
    (ADC1_ISR, "ADC1_ISR", 0),
    (ADC1_IER, "ADC1_IER", 0),
    (ADC1_CR, "ADC1_CR", 0x2000_0000),
    (ADC1_SMPR1, "ADC1_SMPR1", 0),
    (ADC1_JSQR, "ADC1_JSQR", 0),
    (ADC1_JDR1, "ADC1_JDR1", 0),
    (ADC1_JDR2, "ADC1_JDR2", 0),
    (ADC12_CCR, "ADC12_CCR", 0),
    (DBGMCU_APB1FZR1, "DBGMCU_APB1FZR1", 0),
    (DBGMCU_APB2FZR, "DBGMCU_APB2FZR", 0),
    (DWT_CTRL, "DWT_CTRL", 0x4000_0000),
    (DWT_CYCCNT, "DWT_CYCCNT", 0),
    (DCB_DEMCR, "DCB_DEMCR", 0),
];

pub const RCC_CR: u32 = 0x4002_1000;
pub const RCC_CFGR: u32 = 0x4002_1008;
pub const RCC_PLLCFGR: u32 = 0x4002_100C;
pub const RCC_AHB2ENR: u32 = 0x4002_104C;
pub const RCC_APB1ENR1: u32 = 0x4002_1058;
pub const RCC_APB2ENR: u32 = 0x4002_1060;
pub const RCC_CSR: u32 = 0x4002_1094;
pub const PWR_CR5: u32 = 0x4000_7080;
pub const FLASH_ACR: u32 = 0x4002_2000;
pub const IWDG_KR: u32 = 0x4000_3000;
pub const IWDG_PR: u32 = 0x4000_3004;
pub const IWDG_RLR: u32 = 0x4000_3008;
pub const IWDG_SR: u32 = 0x4000_300C;
pub const TIM1_CR1: u32 = 0x4001_2C00;
pub const TIM1_DIER: u32 = 0x4001_2C0C;
pub const TIM1_SR: u32 = 0x4001_2C10;
pub const TIM1_EGR: u32 = 0x4001_2C14;
pub const TIM1_CCMR1: u32 = 0x4001_2C18;
pub const TIM1_CCMR2: u32 = 0x4001_2C1C;
pub const TIM1_CCER: u32 = 0x4001_2C20;
pub const TIM1_PSC: u32 = 0x4001_2C28;
pub const TIM1_ARR: u32 = 0x4001_2C2C;
pub const TIM1_RCR: u32 = 0x4001_2C30;
pub const TIM1_CCR1: u32 = 0x4001_2C34;
pub const TIM1_CCR4: u32 = 0x4001_2C40;
pub const TIM1_BDTR: u32 = 0x4001_2C44;
pub const GPIOA: u32 = 0x4800_0000;
pub const GPIOB: u32 = 0x4800_0400;
pub const GPIOC: u32 = 0x4800_0800;
pub const MODER: u32 = 0x00;
pub const OSPEEDR: u32 = 0x08;
pub const PUPDR: u32 = 0x0C;
pub const IDR: u32 = 0x10;
pub const BSRR: u32 = 0x18;
pub const AFRH: u32 = 0x24;
pub const ADC1_ISR: u32 = 0x5000_0000;
pub const ADC1_IER: u32 = 0x5000_0004;
pub const ADC1_CR: u32 = 0x5000_0008;
pub const ADC1_SMPR1: u32 = 0x5000_0014;
pub const ADC1_JSQR: u32 = 0x5000_004C;
pub const ADC1_JDR1: u32 = 0x5000_0080;
pub const ADC1_JDR2: u32 = 0x5000_0084;
pub const ADC12_CCR: u32 = 0x5000_0308;
pub const DBGMCU_APB1FZR1: u32 = 0xE004_2008;
pub const DBGMCU_APB2FZR: u32 = 0xE004_2010;
pub const DWT_CTRL: u32 = 0xE000_1000;
pub const DWT_CYCCNT: u32 = 0xE000_1004;
pub const DCB_DEMCR: u32 = 0xE000_EDFC;

/// The windows the model is mapped at: (base, size). Armagnac's own system control space
/// (NVIC, SCB, SysTick) sits between them.
pub const WINDOWS: &[(u32, u32)] = &[
    (0x4000_0000, 0x1000_0400),
    (0xE000_1000, 0x1000),
    (0xE000_EDF0, 0x10),
    (0xE004_2000, 0x400),
];

/// Register state shared by the windows and the rig.
#[derive(Debug)]
pub struct Peripherals {
    regs: HashMap<u32, u32>,
    /// PB6 level (the trigger switch pulls it low when pressed).
    pub trigger_pressed: bool,
    /// GPIOB output latch (written through BSRR).
    pub gpiob_odr: u32,
    /// Rig time, CPU cycles since TIM1 started (set by the rig before it runs the firmware).
    pub now: u64,
    /// Rig time of the last watchdog refresh (0xAAAA), if any.
    pub iwdg_refreshed_at: Option<u64>,
    /// Whether the watchdog was started (0xCCCC).
    pub iwdg_started: bool,
    /// A TIM1 update generation (UG) is pending for the rig to apply.
    pub tim1_ug: bool,
    /// IWDG PR/RLR writable (key 0x5555 written; any other key locks them again).
    iwdg_unlocked: bool,
}

impl Default for Peripherals {
    fn default() -> Self {
        Peripherals {
            regs: REGISTERS.iter().map(|(a, _, reset)| (*a, *reset)).collect(),
            trigger_pressed: false,
            now: 0,
            gpiob_odr: 0,
            iwdg_refreshed_at: None,
            iwdg_started: false,
            tim1_ug: false,
            iwdg_unlocked: false,
        }
    }
}

impl Peripherals {
    /// A model without `address` (tests: show that an unmodelled access is reported).
    pub fn without(address: u32) -> Self {
        let mut p = Peripherals::default();
        p.regs.remove(&address);
        p
    }

    /// The current value of a modelled register (0 if not modelled).
    pub fn get(&self, address: u32) -> u32 {
        self.regs.get(&address).copied().unwrap_or(0)
    }

    /// Sets status bits from the hardware side (conversion done, update event).
    pub fn set_bits(&mut self, address: u32, bits: u32) {
        if let Some(v) = self.regs.get_mut(&address) {
            *v |= bits;
        }
    }

    /// Stores a conversion result.
    pub fn set(&mut self, address: u32, value: u32) {
        if let Some(v) = self.regs.get_mut(&address) {
            *v = value;
        }
    }

    /// Whether the peripheral holding `address` has its bus clock enabled (RCC). Without it
    /// the silicon ignores writes and reads zero; so does the model.
    fn clocked(&self, address: u32) -> bool {
        let bit = |register: u32, bit: u32| self.get(register) & (1 << bit) != 0;
        match address {
            a if (0x4001_2C00..0x4001_3000).contains(&a) => bit(RCC_APB2ENR, 11),
            a if (GPIOA..GPIOA + 0x400).contains(&a) => bit(RCC_AHB2ENR, 0),
            a if (GPIOB..GPIOB + 0x400).contains(&a) => bit(RCC_AHB2ENR, 1),
            a if (GPIOC..GPIOC + 0x400).contains(&a) => bit(RCC_AHB2ENR, 2),
            a if (0x5000_0000..0x5000_0400).contains(&a) => bit(RCC_AHB2ENR, 13),
            PWR_CR5 => bit(RCC_APB1ENR1, 28),
            _ => true,
        }
    }

    fn read(&mut self, address: u32, env: &Env) -> MemoryReadResult<u32> {
        let value = *self
            .regs
            .get(&address)
            .ok_or(MemoryAccessError::InvalidAddress)?;
        if !self.clocked(address) {
            return Ok(0);
        }
        Ok(match address {
            // PLLRDY follows PLLON; HSIRDY stays set (HSI16 runs from reset).
            RCC_CR => {
                if value & (1 << 24) != 0 {
                    value | (1 << 25)
                } else {
                    value & !(1 << 25)
                }
            }
            // SWS follows SW.
            RCC_CFGR => (value & !0b1100) | ((value & 0b11) << 2),
            // Register updates complete at once.
            IWDG_SR => 0,
            a if a == GPIOB + IDR => {
                // Pull-up on PB6; the pressed switch pulls it low.
                if self.trigger_pressed {
                    0
                } else {
                    1 << 6
                }
            }
            DWT_CYCCNT => env.cycles as u32,
            _ => value,
        })
    }

    fn write(&mut self, address: u32, value: u32, _env: &Env) -> MemoryWriteResult {
        let old = *self
            .regs
            .get(&address)
            .ok_or(MemoryAccessError::InvalidAddress)?;
        if !self.clocked(address) {
            return Ok(());
        }
        let new = match address {
            RCC_CSR => {
                if value & (1 << 23) != 0 {
                    // RMVF clears the reset flags.
                    value & 0x00FF_FFFF & !(1 << 23)
                } else {
                    (old & 0xFF00_0000) | (value & 0x00FF_FFFF)
                }
            }
            IWDG_KR => {
                self.iwdg_unlocked = value & 0xFFFF == 0x5555;
                match value & 0xFFFF {
                    0xCCCC => {
                        self.iwdg_started = true;
                        self.iwdg_refreshed_at = Some(self.now);
                    }
                    0xAAAA => self.iwdg_refreshed_at = Some(self.now),
                    _ => {}
                }
                0
            }
            // Write-protected unless unlocked with 0x5555.
            IWDG_PR | IWDG_RLR if !self.iwdg_unlocked => old,
            TIM1_SR => old & value,
            TIM1_EGR => {
                if value & 1 != 0 {
                    self.tim1_ug = true;
                }
                0
            }
            a if a == GPIOB + BSRR => {
                self.gpiob_odr = (self.gpiob_odr & !(value >> 16)) | (value & 0xFFFF);
                0
            }
            a if a == GPIOB + IDR => old,
            ADC1_ISR => old & !value,
            ADC1_CR => {
                if value & 1 != 0 {
                    // ADEN: ready at once.
                    self.set_bits(ADC1_ISR, 1);
                }
                // Calibration completes at once.
                value & !(1 << 31)
            }
            ADC1_JDR1 | ADC1_JDR2 | DWT_CYCCNT => old,
            _ => value,
        };
        self.regs.insert(address, new);
        Ok(())
    }
}

/// One mapped window onto the shared [`Peripherals`].
pub struct Window {
    /// Base address.
    pub base: u32,
    /// Size, bytes.
    pub size: u32,
    /// The model.
    pub model: Rc<RefCell<Peripherals>>,
}

impl MemoryInterface for Window {
    fn size(&self) -> u32 {
        self.size
    }

    fn read_u32le(&mut self, offset: u32, env: &mut Env) -> MemoryReadResult<u32> {
        if offset & 3 != 0 {
            return Err(MemoryAccessError::InvalidAlignment);
        }
        self.model.borrow_mut().read(self.base + offset, env)
    }

    fn write_u32le(&mut self, offset: u32, value: u32, env: &mut Env) -> MemoryWriteResult {
        if offset & 3 != 0 {
            return Err(MemoryAccessError::InvalidAlignment);
        }
        self.model
            .borrow_mut()
            .write(self.base + offset, value, env)
    }

    // Byte and halfword accesses: the firmware makes none to these peripherals; refusing them
    // reports any that appear instead of guessing their semantics.
}

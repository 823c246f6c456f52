//! Seasonal profiles: per-slot means and spreads of an hour of the day or
//! of the week, learned from the slot a point falls in and read with linear
//! interpolation between slot centres.
use super::detector::{CLIP, MEAN_ABS_TO_SIGMA};

/// Length of a profile slot: an hour.
pub(crate) const SLOT_SECS: i64 = 3_600;

/// A seasonal profile: per-slot mean and σ, and how many points each slot
/// has learned from (saturating): all points for the mean, the profile's own
/// residuals for σ.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Profile<const N: usize> {
    pub(crate) mean: [f32; N],
    pub(crate) sigma: [f32; N],
    pub(crate) count: [u8; N],
    pub(crate) own: [u8; N],
}

impl<const N: usize> Profile<N> {
    pub(crate) fn new() -> Self {
        Self {
            mean: [0.0; N],
            sigma: [0.0; N],
            count: [0; N],
            own: [0; N],
        }
    }

    /// Interpolated (mean, σ) at a position once both slots have a mean
    /// (`min_count` points), and whether σ is trusted too (`min_count` own
    /// residuals in at least one of the slots).
    #[inline]
    pub(crate) fn read(&self, pos: SlotPos, min_count: u8) -> Option<(f64, f64, bool)> {
        let (a, b) = (pos.lo, pos.hi);
        if self.count[a] < min_count || self.count[b] < min_count {
            return None;
        }
        let w = pos.frac;
        let mean = f64::from(self.mean[a]) * (1.0 - w) + f64::from(self.mean[b]) * w;
        let (sa, sb) = (f64::from(self.sigma[a]), f64::from(self.sigma[b]));
        // While the profile's first own cycle runs, one trusted slot σ
        // serves alone rather than waiting a whole further cycle.
        let (sigma, trusted) = match (self.own[a] >= min_count, self.own[b] >= min_count) {
            (true, true) => (sa * (1.0 - w) + sb * w, true),
            (true, false) => (sa, true),
            (false, true) => (sb, true),
            (false, false) => (sa * (1.0 - w) + sb * w, false),
        };
        Some((mean, sigma, trusted))
    }

    /// Learns a (winsorised) value in the slot containing the point, and the
    /// profile's own residual there once it can predict.
    #[inline]
    pub(crate) fn learn(
        &mut self,
        slot: usize,
        value: f64,
        residual: Option<f64>,
        cap: u8,
        rate: f64,
    ) {
        // Running means for the first `cap` points, then EWMAs over `cap`;
        // a slot's first point is its whole estimate, whatever the rate.
        let n = self.count[slot];
        let a = if n == 0 {
            1.0
        } else {
            rate / (f64::from(n.min(cap)) + 1.0)
        };
        ewma(&mut self.mean[slot], value, a);
        self.count[slot] = n.saturating_add(1);
        if let Some(r) = residual {
            let m = self.own[slot];
            let a = if m == 0 {
                1.0
            } else {
                rate / (f64::from(m.min(cap)) + 1.0)
            };
            let sigma = f64::from(self.sigma[slot]);
            let abs = MEAN_ABS_TO_SIGMA * r.abs();
            let abs = if m >= 10 { abs.min(CLIP * sigma) } else { abs };
            ewma(&mut self.sigma[slot], abs, a);
            self.own[slot] = m.saturating_add(1);
        }
    }
}

/// Where a timestamp falls in a profile: the slot containing it (learning)
/// and the two slot centres around it (reading).
#[derive(Clone, Copy, Debug)]
pub(crate) struct SlotPos {
    pub(crate) slot: usize,
    lo: usize,
    hi: usize,
    frac: f64,
}

#[inline]
pub(crate) fn slot_pos(ts: i64, period: i64, slots: usize) -> SlotPos {
    let within = ts.rem_euclid(period);
    let slot = (within / SLOT_SECS) as usize;
    // Slot centres sit at half past each hour.
    let mut p = within as f64 / SLOT_SECS as f64 - 0.5;
    if p < 0.0 {
        p += slots as f64;
    }
    let lo = (p as usize).min(slots - 1);
    SlotPos {
        slot,
        lo,
        hi: (lo + 1) % slots,
        frac: p - lo as f64,
    }
}

#[inline]
pub(crate) fn ewma(v: &mut f32, target: f64, alpha: f64) {
    let cur = f64::from(*v);
    *v = (cur + alpha * (target - cur)) as f32;
}

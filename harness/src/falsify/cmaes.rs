//! CMA-ES, the covariance matrix adaptation evolution strategy (Hansen and Ostermeier 2001;
//! the parameter settings of Hansen, "The CMA Evolution Strategy: A Tutorial", 2016), with
//! IPOP restarts (Auger and Hansen 2005: after each stagnation, restart from a new random mean
//! with twice the population).
//!
//! A derivative-free optimiser for a bounded, noisy, partly discrete objective: the search runs
//! in an unbounded space whose points are folded into the unit box by reflection
//! ([`reflect`]), so every sampled point is a valid one; plateaus from integer rounding and the
//! simulation's noise end a run by stagnation, which starts the next one. Written here rather
//! than taken from a crate: the crates.io implementations pull in a linear-algebra library for
//! one 27x27 symmetric eigendecomposition per generation ([`symmetric_eigen`], Jacobi
//! rotations). Deterministic for a seed ([`Xoshiro`]); tested against the usual benchmark
//! functions (sphere, ellipsoid, Rosenbrock, Rastrigin).

// The matrix algebra reads as the tutorial writes it: with indices.
#![allow(clippy::needless_range_loop)]

/// xoshiro256** (Blackman and Vigna), seeded by splitmix64: a small deterministic generator.
#[derive(Debug, Clone)]
pub struct Xoshiro {
    s: [u64; 4],
}

impl Xoshiro {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Self {
        let mut x = seed;
        let mut next = || {
            x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        };
        Self {
            s: [next(), next(), next(), next()],
        }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let result = self.s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        result
    }

    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Standard normal (Box-Muller).
    pub fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.uniform();
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
}

/// Folds a real number into [0, 1] by reflection at the bounds (period 2), so that an
/// unbounded search covers the box without piling points up on its faces.
pub fn reflect(x: f64) -> f64 {
    if !x.is_finite() {
        return 0.5;
    }
    let t = x.rem_euclid(2.0);
    if t <= 1.0 {
        t
    } else {
        2.0 - t
    }
}

/// Eigendecomposition of a symmetric matrix (row-major, `n` x `n`) by cyclic Jacobi rotations:
/// returns the eigenvalues and the eigenvectors as the columns of a row-major matrix.
pub fn symmetric_eigen(matrix: &[f64], n: usize) -> (Vec<f64>, Vec<f64>) {
    let mut a = matrix.to_vec();
    let mut v = vec![0.0; n * n];
    for i in 0..n {
        v[i * n + i] = 1.0;
    }
    for _sweep in 0..100 {
        let mut off = 0.0;
        for i in 0..n {
            for j in (i + 1)..n {
                off += a[i * n + j] * a[i * n + j];
            }
        }
        let scale: f64 = (0..n).map(|i| a[i * n + i].abs()).sum::<f64>().max(1e-300);
        if off.sqrt() <= 1e-15 * scale {
            break;
        }
        for p in 0..n {
            for q in (p + 1)..n {
                let apq = a[p * n + q];
                if apq.abs() <= 1e-300 {
                    continue;
                }
                let theta = (a[q * n + q] - a[p * n + p]) / (2.0 * apq);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let t = if theta == 0.0 { 1.0 } else { t };
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for k in 0..n {
                    let akp = a[k * n + p];
                    let akq = a[k * n + q];
                    a[k * n + p] = c * akp - s * akq;
                    a[k * n + q] = s * akp + c * akq;
                }
                for k in 0..n {
                    let apk = a[p * n + k];
                    let aqk = a[q * n + k];
                    a[p * n + k] = c * apk - s * aqk;
                    a[q * n + k] = s * apk + c * aqk;
                }
                for k in 0..n {
                    let vkp = v[k * n + p];
                    let vkq = v[k * n + q];
                    v[k * n + p] = c * vkp - s * vkq;
                    v[k * n + q] = s * vkp + c * vkq;
                }
            }
        }
    }
    ((0..n).map(|i| a[i * n + i]).collect(), v)
}

/// Why a CMA-ES run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// The step size collapsed (the population agrees to well below the space's resolution).
    StepSize,
    /// The best value did not improve over the last generations (a plateau, or noise).
    Stagnation,
    /// The covariance became ill-conditioned.
    Condition,
}

/// One CMA-ES run (minimisation), used ask-and-tell: [`Cmaes::ask`] samples a generation,
/// [`Cmaes::tell`] updates on its values.
#[derive(Debug, Clone)]
pub struct Cmaes {
    n: usize,
    lambda: usize,
    weights: Vec<f64>,
    mueff: f64,
    cc: f64,
    cs: f64,
    c1: f64,
    cmu: f64,
    damps: f64,
    chi_n: f64,
    mean: Vec<f64>,
    sigma: f64,
    pc: Vec<f64>,
    ps: Vec<f64>,
    c: Vec<f64>,
    b: Vec<f64>,
    d: Vec<f64>,
    generation: u32,
    best_history: Vec<f64>,
    tol_x: f64,
    rng: Xoshiro,
    pending: Vec<Vec<f64>>,
}

impl Cmaes {
    /// The default population for `n` dimensions, `4 + floor(3 ln n)`.
    pub fn default_population(n: usize) -> usize {
        4 + (3.0 * (n.max(1) as f64).ln()).floor() as usize
    }

    /// A run from `mean` with step size `sigma` and population `lambda` (at least 4) that ends
    /// when the search's standard deviation along every axis is below `tol_x`.
    pub fn new(mean: Vec<f64>, sigma: f64, lambda: usize, tol_x: f64, seed: u64) -> Self {
        let n = mean.len().max(1);
        let lambda = lambda.max(4);
        let mu = lambda / 2;
        let raw: Vec<f64> = (0..mu)
            .map(|i| ((mu as f64) + 0.5).ln() - ((i + 1) as f64).ln())
            .collect();
        let total: f64 = raw.iter().sum();
        let weights: Vec<f64> = raw.iter().map(|w| w / total).collect();
        let mueff = 1.0 / weights.iter().map(|w| w * w).sum::<f64>();
        let nf = n as f64;
        let cc = (4.0 + mueff / nf) / (nf + 4.0 + 2.0 * mueff / nf);
        let cs = (mueff + 2.0) / (nf + mueff + 5.0);
        let c1 = 2.0 / ((nf + 1.3).powi(2) + mueff);
        let cmu = (1.0 - c1).min(2.0 * (mueff - 2.0 + 1.0 / mueff) / ((nf + 2.0).powi(2) + mueff));
        let damps = 1.0 + 2.0 * (((mueff - 1.0) / (nf + 1.0)).sqrt() - 1.0).max(0.0) + cs;
        let chi_n = nf.sqrt() * (1.0 - 1.0 / (4.0 * nf) + 1.0 / (21.0 * nf * nf));
        let mut identity = vec![0.0; n * n];
        for i in 0..n {
            identity[i * n + i] = 1.0;
        }
        Self {
            n,
            lambda,
            weights,
            mueff,
            cc,
            cs,
            c1,
            cmu,
            damps,
            chi_n,
            mean,
            sigma,
            pc: vec![0.0; n],
            ps: vec![0.0; n],
            c: identity.clone(),
            b: identity,
            d: vec![1.0; n],
            generation: 0,
            best_history: Vec::new(),
            tol_x,
            rng: Xoshiro::new(seed),
            pending: Vec::new(),
        }
    }

    /// Population size.
    pub fn population(&self) -> usize {
        self.lambda
    }

    /// Samples a generation of [`Cmaes::population`] points.
    pub fn ask(&mut self) -> Vec<Vec<f64>> {
        let n = self.n;
        self.pending = (0..self.lambda)
            .map(|_| {
                let z: Vec<f64> = (0..n).map(|_| self.rng.normal()).collect();
                (0..n)
                    .map(|i| {
                        let y: f64 = (0..n).map(|j| self.b[i * n + j] * self.d[j] * z[j]).sum();
                        self.mean[i] + self.sigma * y
                    })
                    .collect()
            })
            .collect();
        self.pending.clone()
    }

    /// Updates on the values of the points of the last [`Cmaes::ask`], in its order; returns
    /// why the run should end, if it should.
    pub fn tell(&mut self, values: &[f64]) -> Option<Stop> {
        let n = self.n;
        let mut order: Vec<usize> = (0..values.len().min(self.pending.len())).collect();
        order.sort_by(|&a, &b| values[a].total_cmp(&values[b]));
        let old = self.mean.clone();
        let mu = self.weights.len().min(order.len());
        let ys: Vec<Vec<f64>> = order[..mu]
            .iter()
            .map(|&k| {
                (0..n)
                    .map(|i| (self.pending[k][i] - old[i]) / self.sigma)
                    .collect()
            })
            .collect();
        let mut yw = vec![0.0; n];
        for (w, y) in self.weights.iter().zip(&ys) {
            for i in 0..n {
                yw[i] += w * y[i];
            }
        }
        for i in 0..n {
            self.mean[i] = old[i] + self.sigma * yw[i];
        }
        // C^-1/2 * yw = B D^-1 B^T yw
        let bt_yw: Vec<f64> = (0..n)
            .map(|j| (0..n).map(|i| self.b[i * n + j] * yw[i]).sum::<f64>() / self.d[j])
            .collect();
        let c_inv_sqrt_yw: Vec<f64> = (0..n)
            .map(|i| (0..n).map(|j| self.b[i * n + j] * bt_yw[j]).sum())
            .collect();
        let ks = (self.cs * (2.0 - self.cs) * self.mueff).sqrt();
        for i in 0..n {
            self.ps[i] = (1.0 - self.cs) * self.ps[i] + ks * c_inv_sqrt_yw[i];
        }
        self.generation += 1;
        let ps_norm = self.ps.iter().map(|x| x * x).sum::<f64>().sqrt();
        let decay = 1.0 - (1.0 - self.cs).powi(2 * self.generation as i32);
        let hsig = ps_norm / decay.max(1e-300).sqrt() / self.chi_n < 1.4 + 2.0 / (n as f64 + 1.0);
        let kc = (self.cc * (2.0 - self.cc) * self.mueff).sqrt();
        for i in 0..n {
            self.pc[i] = (1.0 - self.cc) * self.pc[i] + if hsig { kc * yw[i] } else { 0.0 };
        }
        let delta = if hsig { 0.0 } else { self.cc * (2.0 - self.cc) };
        for i in 0..n {
            for j in 0..n {
                let rank_mu: f64 = self
                    .weights
                    .iter()
                    .zip(&ys)
                    .map(|(w, y)| w * y[i] * y[j])
                    .sum();
                self.c[i * n + j] = (1.0 - self.c1 - self.cmu) * self.c[i * n + j]
                    + self.c1 * (self.pc[i] * self.pc[j] + delta * self.c[i * n + j])
                    + self.cmu * rank_mu;
            }
        }
        self.sigma *= ((self.cs / self.damps) * (ps_norm / self.chi_n - 1.0))
            .min(1.0)
            .exp();
        let (values_c, vectors) = symmetric_eigen(&self.c, n);
        self.d = values_c.iter().map(|v| v.max(1e-300).sqrt()).collect();
        self.b = vectors;
        if let Some(&best) = order.first().and_then(|&k| values.get(k)) {
            self.best_history.push(best);
        }
        self.stop()
    }

    fn stop(&self) -> Option<Stop> {
        let dmax = self.d.iter().copied().fold(0.0, f64::max);
        let dmin = self.d.iter().copied().fold(f64::INFINITY, f64::min);
        if self.sigma * dmax < self.tol_x {
            return Some(Stop::StepSize);
        }
        if dmax / dmin.max(1e-300) > 1e7 {
            return Some(Stop::Condition);
        }
        // TolHistFun: the generations' best values over the last 10 + 30 n / lambda
        // generations span nothing (a plateau of the rounding, or a converged run).
        let window = 10 + (30 * self.n) / self.lambda;
        let history = &self.best_history;
        if history.len() >= window {
            let recent = &history[history.len() - window..];
            let lo = recent.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = recent.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            if hi - lo <= 1e-12 * lo.abs().max(1e-12) {
                return Some(Stop::Stagnation);
            }
        }
        // Stagnation (Hansen 2016, appendix B.3): over at least 120 + 30 n / lambda
        // generations, the median of the newest 20 % of the best values is no better than the
        // median of the oldest 30 % of the recent ones.
        let long = 120 + (30 * self.n) / self.lambda;
        if history.len() >= long {
            let recent = &history[history.len() - long..];
            let median = |values: &[f64]| {
                let mut v = values.to_vec();
                v.sort_by(f64::total_cmp);
                v.get(v.len() / 2).copied().unwrap_or(f64::INFINITY)
            };
            let newest = median(&recent[recent.len() - recent.len() / 5..]);
            let oldest = median(&recent[..recent.len() * 3 / 10]);
            if newest >= oldest {
                return Some(Stop::Stagnation);
            }
        }
        None
    }
}

/// What [`minimise`] found.
#[derive(Debug, Clone, PartialEq)]
pub struct Minimum {
    /// The best point, in the unit box.
    pub point: Vec<f64>,
    /// Its value.
    pub value: f64,
    /// Evaluations used.
    pub evaluations: u64,
    /// Restarts after the first run.
    pub restarts: u32,
}

/// Minimises `f` over the unit box `[0, 1]^n` with IPOP-CMA-ES: at most `budget` evaluations,
/// stopping early when a value `<= target` is found; a run restarts when its step size falls
/// below `tol_x` (or it stagnates). `f` takes a whole generation (so the
/// caller may evaluate it in parallel) and returns its values in order; fewer values than
/// points (none, say, when a time budget ran out) end the search.
pub fn minimise(
    n: usize,
    budget: u64,
    target: f64,
    tol_x: f64,
    seed: u64,
    mut f: impl FnMut(&[Vec<f64>]) -> Vec<f64>,
) -> Minimum {
    let mut rng = Xoshiro::new(seed ^ 0x5eed_cafe_f00d_0001);
    let mut best = Minimum {
        point: vec![0.5; n],
        value: f64::INFINITY,
        evaluations: 0,
        restarts: 0,
    };
    let mut lambda = Cmaes::default_population(n);
    let mut run = 0u64;
    'runs: while best.evaluations < budget {
        best.restarts = u32::try_from(run).unwrap_or(u32::MAX);
        let mean: Vec<f64> = (0..n).map(|_| rng.uniform()).collect();
        let mut es = Cmaes::new(
            mean,
            0.3,
            lambda,
            tol_x,
            seed.wrapping_add(run.wrapping_mul(0x9e37)),
        );
        loop {
            let left = budget - best.evaluations;
            let mut points = es.ask();
            points.truncate(usize::try_from(left).unwrap_or(usize::MAX));
            let boxed: Vec<Vec<f64>> = points
                .iter()
                .map(|p| p.iter().copied().map(reflect).collect())
                .collect();
            let values = f(&boxed);
            let cut_short = values.len() < boxed.len();
            for (point, &value) in boxed.iter().zip(&values) {
                best.evaluations += 1;
                if value < best.value {
                    best.value = value;
                    best.point = point.clone();
                }
                if value <= target {
                    break 'runs;
                }
            }
            if cut_short || points.len() < es.population() || best.evaluations >= budget {
                break 'runs;
            }
            if es.tell(&values).is_some() {
                break;
            }
        }
        run += 1;
        lambda *= 2;
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The benchmark functions are centred off the box's centre, at 0.3 in every coordinate.
    fn shifted(x: &[f64]) -> Vec<f64> {
        x.iter().map(|v| (v - 0.3) * 10.0).collect()
    }

    fn sphere(x: &[f64]) -> f64 {
        shifted(x).iter().map(|v| v * v).sum()
    }

    fn ellipsoid(x: &[f64]) -> f64 {
        let n = x.len() as f64;
        shifted(x)
            .iter()
            .enumerate()
            .map(|(i, v)| 1e4f64.powf(i as f64 / (n - 1.0)) * v * v)
            .sum()
    }

    fn rosenbrock(x: &[f64]) -> f64 {
        // minimum at shifted = 1, i.e. x = 0.4
        let y = shifted(x);
        y.windows(2)
            .map(|w| 100.0 * (w[1] - w[0] * w[0]).powi(2) + (1.0 - w[0]).powi(2))
            .sum()
    }

    fn rastrigin(x: &[f64]) -> f64 {
        let y = shifted(x);
        10.0 * y.len() as f64
            + y.iter()
                .map(|v| v * v - 10.0 * (std::f64::consts::TAU * v).cos())
                .sum::<f64>()
    }

    fn run(f: fn(&[f64]) -> f64, n: usize, budget: u64, target: f64, seed: u64) -> Minimum {
        minimise(n, budget, target, 1e-12, seed, |points| {
            points.iter().map(|p| f(p)).collect()
        })
    }

    #[test]
    fn reflection_folds_every_real_into_the_unit_box() {
        for x in [
            -3.7,
            -1.0,
            -0.2,
            0.0,
            0.4,
            1.0,
            1.3,
            2.0,
            2.5,
            7.9,
            1e9,
            f64::NAN,
        ] {
            let u = reflect(x);
            assert!((0.0..=1.0).contains(&u), "{x} -> {u}");
        }
        assert!((reflect(1.3) - 0.7).abs() < 1e-12);
        assert!((reflect(-0.2) - 0.2).abs() < 1e-12);
        assert!((reflect(2.4) - 0.4).abs() < 1e-12);
    }

    #[test]
    fn jacobi_recovers_a_known_decomposition() {
        // [[2, 1], [1, 2]]: eigenvalues 1 and 3.
        let (mut values, _) = symmetric_eigen(&[2.0, 1.0, 1.0, 2.0], 2);
        values.sort_by(f64::total_cmp);
        assert!((values[0] - 1.0).abs() < 1e-12 && (values[1] - 3.0).abs() < 1e-12);
        // A random symmetric 6x6: B diag(D) B^T reproduces it and B is orthonormal.
        let n = 6;
        let mut rng = Xoshiro::new(7);
        let mut a = vec![0.0; n * n];
        for i in 0..n {
            for j in i..n {
                let v = rng.normal();
                a[i * n + j] = v;
                a[j * n + i] = v;
            }
        }
        let (d, b) = symmetric_eigen(&a, n);
        for i in 0..n {
            for j in 0..n {
                let rebuilt: f64 = (0..n).map(|k| b[i * n + k] * d[k] * b[j * n + k]).sum();
                assert!((rebuilt - a[i * n + j]).abs() < 1e-9, "({i},{j})");
                let dot: f64 = (0..n).map(|k| b[k * n + i] * b[k * n + j]).sum();
                assert!((dot - f64::from(u8::from(i == j))).abs() < 1e-9);
            }
        }
    }

    #[test]
    fn the_generator_is_deterministic_and_its_normals_are_standard() {
        let mut a = Xoshiro::new(3);
        let mut b = Xoshiro::new(3);
        assert_eq!(a.next_u64(), b.next_u64());
        let mut rng = Xoshiro::new(11);
        let samples: Vec<f64> = (0..20_000).map(|_| rng.normal()).collect();
        let mean = samples.iter().sum::<f64>() / samples.len() as f64;
        let var = samples.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / samples.len() as f64;
        assert!(mean.abs() < 0.03, "mean {mean}");
        assert!((var - 1.0).abs() < 0.05, "variance {var}");
    }

    #[test]
    fn converges_on_the_sphere_and_the_ill_conditioned_ellipsoid() {
        let m = run(sphere, 10, 20_000, 1e-10, 1);
        assert!(m.value <= 1e-10, "sphere: {m:?}");
        assert!(m.point.iter().all(|v| (v - 0.3).abs() < 1e-5));
        let m = run(ellipsoid, 8, 40_000, 1e-8, 2);
        assert!(m.value <= 1e-8, "ellipsoid: {m:?}");
    }

    #[test]
    fn follows_the_rosenbrock_valley() {
        let m = run(rosenbrock, 6, 40_000, 1e-8, 3);
        assert!(m.value <= 1e-8, "rosenbrock: {m:?}");
        assert!(m.point.iter().all(|v| (v - 0.4).abs() < 1e-3), "{m:?}");
    }

    #[test]
    fn restarts_with_a_larger_population_escape_rastrigins_local_minima() {
        // Rastrigin in 4 dimensions has thousands of local minima in the box; a single run
        // from the default population usually ends in one of them, IPOP finds the global one.
        let m = run(rastrigin, 4, 60_000, 1e-6, 4);
        assert!(m.value <= 1e-6, "rastrigin: {m:?}");
        assert!(m.restarts >= 1, "{m:?}");
    }

    #[test]
    fn the_same_seed_gives_the_same_search_and_the_budget_holds() {
        let a = run(rastrigin, 5, 3_000, -1.0, 9);
        let b = run(rastrigin, 5, 3_000, -1.0, 9);
        assert_eq!(a, b);
        assert_eq!(a.evaluations, 3_000);
        let c = run(rastrigin, 5, 3_000, -1.0, 10);
        assert_ne!(a.point, c.point);
    }
}

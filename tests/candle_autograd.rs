//! candle's autograd as the studio builds it (vendor/candle-core, whose gradient store
//! keeps the first gradient of a tensor instead of adding it to zeros): gradients against
//! their closed forms wherever that change acts.

use candle_core::{Device, Tensor, Var};

fn var(values: &[f32], shape: &[usize]) -> Var {
    Var::from_tensor(&Tensor::from_slice(values, shape, &Device::Cpu).unwrap()).unwrap()
}

fn values(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1().unwrap()
}

fn assert_close(got: &[f32], want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}");
    for (g, w) in got.iter().zip(want) {
        assert!((g - w).abs() < 1e-6, "{what}: {got:?} vs {want:?}");
    }
}

#[test]
fn a_single_consumer_passes_its_gradient_through() {
    let x = var(&[1.0, -2.0, 3.0], &[3]);
    let c = Tensor::new(&[4f32, 5.0, 6.0], &Device::Cpu).unwrap();
    // d/dx sum(3x ⊙ c) = 3c
    let loss = (x.as_tensor() * 3.0)
        .unwrap()
        .mul(&c)
        .unwrap()
        .sum_all()
        .unwrap();
    let grads = loss.backward().unwrap();
    assert_close(&values(grads.get(&x).unwrap()), &[12.0, 15.0, 18.0], "dx");
}

#[test]
fn gradients_from_several_consumers_are_summed() {
    let x = var(&[1.0, 2.0], &[2]);
    let y = var(&[3.0, -1.0], &[2]);
    // a = x + y; b = a ⊙ x + exp(x) + y: db/dx = a + x + exp(x), db/dy = x + 1.
    let a = (x.as_tensor() + y.as_tensor()).unwrap();
    let b = ((a.mul(x.as_tensor()).unwrap() + x.as_tensor().exp().unwrap()).unwrap()
        + y.as_tensor())
    .unwrap();
    let grads = b.sum_all().unwrap().backward().unwrap();
    let want_x: Vec<f32> = [(1f32, 3f32), (2.0, -1.0)]
        .iter()
        .map(|&(x, y)| (x + y) + x + x.exp())
        .collect();
    assert_close(&values(grads.get(&x).unwrap()), &want_x, "dx");
    assert_close(&values(grads.get(&y).unwrap()), &[2.0, 3.0], "dy");
}

#[test]
fn an_operand_on_both_sides_of_an_add_gets_both_gradients() {
    let x = var(&[1.0, 2.0, 3.0], &[3]);
    // (x + x) feeds a product; the one gradient tensor reaches x twice.
    let c = Tensor::new(&[1f32, 10.0, 100.0], &Device::Cpu).unwrap();
    let loss = (x.as_tensor() + x.as_tensor())
        .unwrap()
        .mul(&c)
        .unwrap()
        .sum_all()
        .unwrap();
    let grads = loss.backward().unwrap();
    assert_close(&values(grads.get(&x).unwrap()), &[2.0, 20.0, 200.0], "dx");
}

#[test]
fn transposed_reshaped_and_broadcast_gradients_land_in_the_right_places() {
    let x = var(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3]);
    let c = Tensor::new(&[[1f32, 2.0], [3.0, 4.0], [5.0, 6.0]], &Device::Cpu).unwrap();
    // sum(xᵀ ⊙ c): dx = cᵀ, arriving as a transposed (non-contiguous) gradient.
    let t = x
        .as_tensor()
        .t()
        .unwrap()
        .mul(&c)
        .unwrap()
        .sum_all()
        .unwrap();
    let grads = t.backward().unwrap();
    assert_close(
        &values(grads.get(&x).unwrap()),
        &[1.0, 3.0, 5.0, 2.0, 4.0, 6.0],
        "transposed",
    );

    // A row broadcast over two rows gets the sum of both rows' gradients.
    let row = var(&[1.0, 1.0, 1.0], &[1, 3]);
    let w = Tensor::new(&[[1f32, 2.0, 3.0], [10.0, 20.0, 30.0]], &Device::Cpu).unwrap();
    let b = row
        .as_tensor()
        .broadcast_as((2, 3))
        .unwrap()
        .mul(&w)
        .unwrap()
        .sum_all()
        .unwrap();
    let grads = b.backward().unwrap();
    assert_close(
        &values(grads.get(&row).unwrap()),
        &[11.0, 22.0, 33.0],
        "broadcast",
    );

    // Through a reshape and back, used twice.
    let r = x.as_tensor().reshape((3, 2)).unwrap();
    let s = (r.sqr().unwrap().sum_all().unwrap() + r.sum_all().unwrap()).unwrap();
    let grads = s.backward().unwrap();
    assert_close(
        &values(grads.get(&x).unwrap()),
        &[3.0, 5.0, 7.0, 9.0, 11.0, 13.0],
        "reshaped",
    );
}

#[test]
fn gradients_do_not_leak_between_backward_passes() {
    let x = var(&[2.0], &[1]);
    let first = (x.as_tensor() * 3.0)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    let second = (x.as_tensor() * 5.0)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    assert_close(&values(first.get(&x).unwrap()), &[3.0], "first");
    assert_close(&values(second.get(&x).unwrap()), &[5.0], "second");
}

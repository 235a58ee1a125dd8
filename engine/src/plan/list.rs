//! [`List`]: a plan's short lists (an action's outputs, inputs and
//! dependents), with no heap allocation for the one item most of them hold.
//!
//! At a million actions, a `Vec` of one item was a heap block of 32 to 48
//! bytes per action and list, allocated and faulted in one at a time (the
//! podcast graph's `raw` and `clean` actions each write one output, read
//! one input and feed one dependent). A `List` is no larger than a `Vec`
//! (16 bytes for refs and indices, whose pointer niche holds the tag) and
//! keeps one item in place; zero or several items are one boxed slice
//! (none allocated for zero). It reads as a slice; it is built whole, from a `Vec` or an
//! iterator, never grown item by item.

use std::fmt;
use std::ops::{Deref, DerefMut};

/// A list that holds one item in place (see the module's documentation).
/// Compares, hashes and prints as its slice of items.
#[derive(Clone)]
pub struct List<T>(Repr<T>);

#[derive(Clone)]
enum Repr<T> {
    One(T),
    /// Zero items, or two and more.
    Many(Box<[T]>),
}

impl<T> List<T> {
    /// The empty list (no allocation).
    pub fn new() -> Self {
        List(Repr::Many(Box::default()))
    }

    /// The list of `item` alone (no allocation).
    pub fn one(item: T) -> Self {
        List(Repr::One(item))
    }

    pub fn as_slice(&self) -> &[T] {
        match &self.0 {
            Repr::One(item) => std::slice::from_ref(item),
            Repr::Many(items) => items,
        }
    }

    pub fn as_mut_slice(&mut self) -> &mut [T] {
        match &mut self.0 {
            Repr::One(item) => std::slice::from_mut(item),
            Repr::Many(items) => items,
        }
    }

    /// The items as a vector.
    pub fn into_vec(self) -> Vec<T> {
        match self.0 {
            Repr::One(item) => vec![item],
            Repr::Many(items) => items.into_vec(),
        }
    }
}

impl<T> Default for List<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> From<Vec<T>> for List<T> {
    fn from(mut items: Vec<T>) -> Self {
        if items.len() == 1
            && let Some(item) = items.pop()
        {
            return List(Repr::One(item));
        }
        List(Repr::Many(items.into_boxed_slice()))
    }
}

impl<T: Clone> From<&[T]> for List<T> {
    fn from(items: &[T]) -> Self {
        match items {
            [item] => List(Repr::One(item.clone())),
            _ => List(Repr::Many(items.into())),
        }
    }
}

impl<T> FromIterator<T> for List<T> {
    fn from_iter<I: IntoIterator<Item = T>>(items: I) -> Self {
        let mut items = items.into_iter();
        let Some(first) = items.next() else {
            return List::new();
        };
        let Some(second) = items.next() else {
            return List(Repr::One(first));
        };
        let mut all = Vec::with_capacity(2 + items.size_hint().0);
        all.push(first);
        all.push(second);
        all.extend(items);
        List(Repr::Many(all.into_boxed_slice()))
    }
}

impl<T> Deref for List<T> {
    type Target = [T];

    fn deref(&self) -> &[T] {
        self.as_slice()
    }
}

impl<T> DerefMut for List<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        self.as_mut_slice()
    }
}

impl<'a, T> IntoIterator for &'a List<T> {
    type Item = &'a T;
    type IntoIter = std::slice::Iter<'a, T>;

    fn into_iter(self) -> Self::IntoIter {
        self.as_slice().iter()
    }
}

impl<T> IntoIterator for List<T> {
    type Item = T;
    type IntoIter = IntoIter<T>;

    fn into_iter(self) -> IntoIter<T> {
        IntoIter(match self.0 {
            Repr::One(item) => Items::One(Some(item)),
            Repr::Many(items) => Items::Many(items.into_vec().into_iter()),
        })
    }
}

/// The items of a [`List`], by value.
pub struct IntoIter<T>(Items<T>);

enum Items<T> {
    One(Option<T>),
    Many(std::vec::IntoIter<T>),
}

impl<T> Iterator for IntoIter<T> {
    type Item = T;

    fn next(&mut self) -> Option<T> {
        match &mut self.0 {
            Items::One(item) => item.take(),
            Items::Many(items) => items.next(),
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        match &self.0 {
            Items::One(item) => (
                usize::from(item.is_some()),
                Some(usize::from(item.is_some())),
            ),
            Items::Many(items) => items.size_hint(),
        }
    }
}

impl<T> ExactSizeIterator for IntoIter<T> {}

impl<T: PartialEq> PartialEq for List<T> {
    fn eq(&self, other: &Self) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl<T: Eq> Eq for List<T> {}

impl<T: PartialEq> PartialEq<Vec<T>> for List<T> {
    fn eq(&self, other: &Vec<T>) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl<T: std::hash::Hash> std::hash::Hash for List<T> {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_slice().hash(state);
    }
}

impl<T: fmt::Debug> fmt::Debug for List<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.as_slice().fmt(f)
    }
}

impl<T: serde::Serialize> serde::Serialize for List<T> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.as_slice().serialize(serializer)
    }
}

impl<'de, T: serde::Deserialize<'de>> serde::Deserialize<'de> for List<T> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Vec::deserialize(deserializer).map(List::from)
    }
}

#[cfg(test)]
mod tests {
    use super::super::{DataDep, InputSource};
    use super::*;
    use crate::refs::PartitionRef;

    #[test]
    fn a_list_is_no_larger_than_a_vector_and_reads_as_its_items() {
        // One item in place, or the boxed slice's pointer and length.
        assert!(size_of::<List<usize>>() <= size_of::<Vec<usize>>());
        assert!(size_of::<List<PartitionRef>>() <= size_of::<Vec<PartitionRef>>());
        assert!(size_of::<List<DataDep>>() <= size_of::<Vec<DataDep>>());
        assert!(size_of::<List<InputSource>>() <= size_of::<Vec<InputSource>>());
        for items in [vec![], vec![7], vec![7, 8], vec![7, 8, 9]] {
            let from_vec = List::from(items.clone());
            let collected: List<usize> = items.iter().copied().collect();
            let from_slice = List::from(&items[..]);
            for list in [&from_vec, &collected, &from_slice] {
                assert_eq!(list.as_slice(), &items[..]);
                assert_eq!(*list, items);
                assert_eq!(format!("{list:?}"), format!("{items:?}"));
                assert_eq!(list.clone().into_vec(), items);
                assert_eq!(list.clone().into_iter().collect::<Vec<_>>(), items);
                assert_eq!(list.clone().into_iter().len(), items.len());
                assert_eq!(list.iter().count(), items.len());
            }
            assert_eq!(from_vec, collected);
            let encoded = postcard::to_stdvec(&from_vec).unwrap();
            assert_eq!(encoded, postcard::to_stdvec(&items).unwrap());
            let decoded: List<usize> = postcard::from_bytes(&encoded).unwrap();
            assert_eq!(decoded, from_vec);
        }
        let mut one = List::from(vec![1]);
        one[0] = 2;
        assert_eq!(one, vec![2]);
    }
}
